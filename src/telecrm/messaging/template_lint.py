"""The template lint: what a template refers to, read from its parsed Jinja2 AST, and the PHI rule.

Every name a template uses must be `namespace.attribute` from the vocabulary in
`messaging/context.py` (a constant attribute or subscript; never a bare namespace, `patient[x]` or
`patient|attr(...)`). Each patient or event reference is classified through the field catalog;
a PHI field in a template for a channel without a BAA refuses the template at load time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import meta, nodes

from telecrm.domain.fields import FIELDS
from telecrm.messaging.context import VOCABULARY, catalog_field_of

# Names Jinja2 itself provides inside templates; harmless, and needed by loops and macros.
JINJA_NAMES = frozenset({"loop", "super", "caller", "varargs", "kwargs", "range"})

BAA_HINT = {
    "email": "SendGrid email never carries PHI: say that something is ready and link to the platform",
    "sms": "set TELECRM_TWILIO_BAA=true only if Twilio signed one",
}


class TemplateError(ValueError):
    """A template that cannot be loaded; the message names the file and line, never a value."""

    def __init__(
        self, detail: str, *, template: str, path: Path | None, line: int | None, where: str
    ) -> None:
        self.template = template
        self.path = path
        self.line = line
        self.detail = detail
        super().__init__(f"{where}{f' line {line}' if line else ''}: {detail}")


class TemplateSyntaxInvalid(TemplateError):
    """Jinja2 could not parse or compile the file."""


class TemplateRefused(TemplateError):
    """The template uses PHI and its channel has no BAA."""


class TemplateUnknownName(TemplateError):
    """A name outside the vocabulary, a field the catalog lacks, or a namespace used whole."""


class TemplateCatalogInvalid(TemplateError):
    """catalog.yaml and the files disagree, or an entry or a file's structure is wrong."""


@dataclass(frozen=True, slots=True)
class Reference:
    """One use of `namespace.attribute` in one file."""

    name: str  # e.g. "patient.first_name"
    where: str  # the file as Jinja2 names it, e.g. "email/welcome.en.j2"
    path: Path | None
    line: int


@dataclass(slots=True)
class Scan:
    """What one file uses: references, other templates, blocks it defines, whether it extends."""

    references: list[Reference] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    blocks: set[str] = field(default_factory=set)
    extends: bool = False


def _walk(
    node: nodes.Node, parent: nodes.Node | None
) -> Iterator[tuple[nodes.Node, nodes.Node | None]]:
    yield node, parent
    for child in node.iter_child_nodes():
        yield from _walk(child, node)


def _bound_names(ast: nodes.Template) -> set[str]:
    """Names the file binds itself: loop targets, {% set %}, macro parameters, imports."""
    bound = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for imp in ast.find_all(nodes.Import):
        bound.add(imp.target)
    for from_imp in ast.find_all(nodes.FromImport):
        for name in from_imp.names:
            bound.add(name[1] if isinstance(name, tuple) else name)
    for macro in ast.find_all(nodes.Macro):
        bound.add(macro.name)
    return bound


def scan_template(ast: nodes.Template, *, template: str, where: str, path: Path | None) -> Scan:
    """Every reference in one parsed file, or TemplateUnknownName at the first bad one."""

    def unknown(detail: str, line: int) -> TemplateUnknownName:
        return TemplateUnknownName(detail, template=template, path=path, line=line, where=where)

    bound = _bound_names(ast)
    for name in sorted(bound & VOCABULARY.keys()):
        line = next(
            (n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx != "load"), 1
        )
        raise unknown(f"rebinds {name}, a name the vocabulary reserves", line)
    result = Scan()
    for node, parent in _walk(ast, None):
        if not isinstance(node, nodes.Name) or node.ctx != "load":
            continue
        if node.name not in VOCABULARY:
            if node.name in bound or node.name in JINJA_NAMES:
                continue
            raise unknown(
                f"{node.name} is not in the template vocabulary ({', '.join(VOCABULARY)})",
                node.lineno,
            )
        attr = _constant_attribute(node, parent)
        if attr is None:
            raise unknown(
                f"{node.name} must be used as {node.name}.<name> with a constant name "
                f"(not whole, subscripted by a variable, or through a filter)",
                node.lineno,
            )
        if attr not in VOCABULARY[node.name]:
            raise unknown(_unknown_attribute(node.name, attr), node.lineno)
        result.references.append(Reference(f"{node.name}.{attr}", where, path, node.lineno))
    for dep in meta.find_referenced_templates(ast):
        if dep is None:
            line = next(
                (
                    n.lineno
                    for n in ast.find_all(
                        (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)
                    )
                ),
                1,
            )
            raise unknown("includes a template chosen at render time; name it literally", line)
        result.dependencies.append(dep)
    result.blocks = {b.name for b in ast.find_all(nodes.Block)}
    result.extends = any(True for _ in ast.find_all(nodes.Extends))
    return result


def _constant_attribute(name: nodes.Name, parent: nodes.Node | None) -> str | None:
    if isinstance(parent, nodes.Getattr) and parent.node is name:
        return parent.attr
    if (
        isinstance(parent, nodes.Getitem)
        and parent.node is name
        and isinstance(parent.arg, nodes.Const)
        and isinstance(parent.arg.value, str)
    ):
        return parent.arg.value
    return None


def _unknown_attribute(namespace: str, attr: str) -> str:
    if namespace == "patient":
        return f"patient.{attr}: the field catalog has no field {attr!r}"
    if namespace == "event":
        return f"event.{attr}: no such event variable (see EVENT_VARIABLES)"
    known = ", ".join(sorted(VOCABULARY[namespace]))
    return f"{namespace}.{attr}: {namespace} has only {known}"


def phi_references(references: list[Reference]) -> list[tuple[Reference, str]]:
    """The references that disclose a PHI field, each with that field's name."""
    found = []
    for ref in references:
        name = catalog_field_of(ref.name)
        if name is not None and FIELDS[name].is_phi:
            found.append((ref, name))
    return found


def check_phi(
    references: list[Reference], *, template: str, channel: str, has_baa: bool
) -> frozenset[str]:
    """The PHI fields used; TemplateRefused at the first one when the channel has no BAA."""
    phi = phi_references(references)
    if phi and not has_baa:
        ref, name = min(phi, key=lambda p: (p[0].where, p[0].line))
        what = (
            f"which is PHI ({name})"
            if ref.name == f"patient.{name}"
            else f"which discloses {name}, PHI"
        )
        raise TemplateRefused(
            f"refers to {ref.name}, {what}; channel {channel} has no BAA "
            f"({BAA_HINT.get(channel, 'no PHI on this channel')})",
            template=template,
            path=ref.path,
            line=ref.line,
            where=ref.where,
        )
    return frozenset(name for _, name in phi)
