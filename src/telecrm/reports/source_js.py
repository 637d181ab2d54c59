"""Express routes in JavaScript / TypeScript source, read with tree-sitter, never run.

Routers are followed across files through `require()` and ES `import`: `app.use('/api',
require('./routes'))` puts that file's exported router under `/api`, with every auth middleware
met on the way (in the mount's arguments, or a `router.use(mw)` registered before the route).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

from tree_sitter import Language, Node, Parser

from telecrm.reports.source_tree import SourceFile

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "all")
RESOLVE_SUFFIXES = ("", ".js", ".ts", ".mjs", ".cjs", ".jsx", ".tsx", "/index.js", "/index.ts")
FRAMEWORK_PACKAGES = {"express": "express", "@nestjs/common": "nestjs", "@nestjs/core": "nestjs"}
MAX_MOUNT_DEPTH = 16  # routers nested deeper than this are a cycle, not an application
_IDENT_PATH = re.compile(r"^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*$")


@cache
def _parser(language: str) -> Parser:
    if language == "javascript":
        import tree_sitter_javascript as grammar

        return Parser(Language(grammar.language()))
    import tree_sitter_typescript as ts_grammar

    lang = ts_grammar.language_tsx() if language == "tsx" else ts_grammar.language_typescript()
    return Parser(Language(lang))


def text_of(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text else ""


def string_value(node: Node | None) -> str | None:
    """The value of a string literal or a template string (`${x}` kept as `{var}`)."""
    if node is None:
        return None
    if node.type == "string":
        return "".join(text_of(c) for c in node.named_children)
    if node.type == "template_string":
        return re.sub(r"\$\{[^}]*\}", "{var}", text_of(node)[1:-1])
    return None


def walk(node: Node) -> Iterator[Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def line(node: Node) -> int:
    return node.start_point[0] + 1


@dataclass
class JsModule:
    file: SourceFile
    root: Node
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # local -> (rel|pkg:x, name)
    exports: dict[str, str] = field(default_factory=dict)  # exported name -> local name
    routers: dict[str, str] = field(default_factory=dict)  # local -> "app" | "router"
    functions: dict[str, Node] = field(default_factory=dict)
    values: dict[str, Node] = field(default_factory=dict)  # local -> the call it was assigned


class JsTree:
    """Every JS / TS module of a tree, parsed once, indexed for following imports."""

    def __init__(self, files: list[SourceFile]) -> None:
        self.paths = {f.rel for f in files}
        self.modules: dict[str, JsModule] = {}
        self.frameworks: set[str] = set()
        for f in files:
            tree = _parser(f.language).parse(f.text.encode("utf-8"))
            mod = JsModule(f, tree.root_node)
            self.modules[f.rel] = mod
            self._index(mod)

    def resolve_spec(self, rel: str, spec: str) -> str:
        if not spec.startswith("."):
            return "pkg:" + spec
        base = posixpath.normpath(posixpath.join(posixpath.dirname(rel), spec))
        for suffix in RESOLVE_SUFFIXES:
            if base + suffix in self.paths:
                return base + suffix
        return "missing:" + base

    def _index(self, mod: JsModule) -> None:
        for node in walk(mod.root):
            kind = node.type
            if kind == "import_statement":
                self._import(mod, node)
            elif kind == "variable_declarator":
                self._declarator(mod, node)
            elif kind == "function_declaration":
                name = node.child_by_field_name("name")
                if name is not None:
                    mod.functions.setdefault(text_of(name), node)
            elif kind == "export_statement":
                self._export(mod, node)
            elif kind == "assignment_expression":
                left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
                target = text_of(left)
                if target == "module.exports" and right is not None:
                    self._module_exports(mod, right)
                elif target.startswith(("module.exports.", "exports.")) and right is not None:
                    exported = target.rsplit(".", 1)[-1]
                    if right.type == "identifier":
                        mod.exports[exported] = text_of(right)
                    else:
                        mod.exports[exported] = exported
                        if right.type in ("arrow_function", "function_expression", "function"):
                            mod.functions.setdefault(exported, right)
        for package, framework in FRAMEWORK_PACKAGES.items():
            if any(v[0] == "pkg:" + package for v in mod.imports.values()):
                self.frameworks.add(framework)

    def _import(self, mod: JsModule, node: Node) -> None:
        source = string_value(node.child_by_field_name("source"))
        if source is None:
            return
        target = self.resolve_spec(mod.file.rel, source)
        for clause in (c for c in node.children if c.type == "import_clause"):
            for part in clause.named_children:
                if part.type == "identifier":
                    mod.imports[text_of(part)] = (target, "default")
                elif part.type == "namespace_import":
                    ident = next((c for c in part.named_children if c.type == "identifier"), None)
                    if ident is not None:
                        mod.imports[text_of(ident)] = (target, "*")
                elif part.type == "named_imports":
                    for spec in part.named_children:
                        name = spec.child_by_field_name("name")
                        alias = spec.child_by_field_name("alias") or name
                        if name is not None:
                            mod.imports[text_of(alias)] = (target, text_of(name))

    def _declarator(self, mod: JsModule, node: Node) -> None:
        name, value = node.child_by_field_name("name"), node.child_by_field_name("value")
        if name is None or value is None:
            return
        while (
            value.type in ("await_expression", "parenthesized_expression") and value.named_children
        ):
            value = value.named_children[0]
        required = self._required(mod, value)
        if required is not None:
            target, member = required
            if name.type == "identifier":
                mod.imports[text_of(name)] = (target, member or "default")
            elif name.type == "object_pattern":
                for local, exported in _pattern_names(name):
                    mod.imports[local] = (target, exported)
            return
        if name.type != "identifier":
            return
        local = text_of(name)
        if value.type in ("arrow_function", "function_expression", "function"):
            mod.functions.setdefault(local, value)
        elif value.type in ("call_expression", "new_expression"):
            mod.values[local] = value
            router = self._router_kind(mod, value)
            if router:
                mod.routers[local] = router

    def _required(self, mod: JsModule, value: Node) -> tuple[str, str | None] | None:
        """`require('x')` → (target, None); `require('x').y` → (target, 'y')."""
        member = None
        if value.type == "member_expression":
            member = text_of(value.child_by_field_name("property"))
            value = value.child_by_field_name("object") or value
        if (
            value.type == "call_expression"
            and text_of(value.child_by_field_name("function")) == "require"
        ):
            args = value.child_by_field_name("arguments")
            spec = string_value(args.named_children[0]) if args and args.named_children else None
            if spec is not None:
                return self.resolve_spec(mod.file.rel, spec), member
        return None

    def _router_kind(self, mod: JsModule, call: Node) -> str | None:
        callee = call.child_by_field_name("function") or call.child_by_field_name("constructor")
        name = text_of(callee)
        if name.endswith("Router") or name.endswith("Router()"):
            return "router"
        if (
            callee is not None
            and callee.type == "identifier"
            and mod.imports.get(name, ("", ""))[0] == "pkg:express"
        ):
            return "app"
        return None

    def _export(self, mod: JsModule, node: Node) -> None:
        declaration = node.child_by_field_name("declaration")
        value = node.child_by_field_name("value")
        is_default = any(c.type == "default" for c in node.children)
        if declaration is not None:
            names = [text_of(declaration.child_by_field_name("name"))]
            if declaration.type in ("lexical_declaration", "variable_declaration"):
                names = [
                    text_of(d.child_by_field_name("name"))
                    for d in declaration.named_children
                    if d.type == "variable_declarator"
                ]
            for n in names:
                if n:
                    mod.exports["default" if is_default else n] = n
            if declaration.type == "function_declaration" and names[0]:
                mod.functions.setdefault(names[0], declaration)
        elif value is not None and value.type == "identifier":
            mod.exports["default"] = text_of(value)
        for clause in (c for c in node.named_children if c.type == "export_clause"):
            for spec in clause.named_children:
                name = spec.child_by_field_name("name")
                alias = spec.child_by_field_name("alias") or name
                if name is not None:
                    mod.exports[text_of(alias)] = text_of(name)

    def _module_exports(self, mod: JsModule, right: Node) -> None:
        if right.type == "identifier":
            mod.exports["default"] = text_of(right)
        elif right.type == "object":
            for local, exported in _pattern_names(right):
                mod.exports[exported] = local
            for pair in (
                c for c in right.named_children if c.type in ("pair", "method_definition")
            ):
                key = text_of(pair.child_by_field_name("key") or pair.child_by_field_name("name"))
                value = pair.child_by_field_name("value") or pair
                if value.type in (
                    "arrow_function",
                    "function_expression",
                    "function",
                    "method_definition",
                ):
                    mod.functions.setdefault(key, value)
                    mod.exports[key] = key

    def exported(self, target: str, name: str, depth: int = 0) -> tuple[JsModule, str] | None:
        """The module and local name behind `name` exported by `target`, through re-exports."""
        mod = self.modules.get(target)
        if mod is None or depth > 8:
            return None
        local = mod.exports.get(name, name if name != "default" else "")
        if local in mod.imports:
            again = mod.imports[local]
            return self.exported(again[0], again[1], depth + 1)
        return (mod, local) if local else None

    def lookup(self, mod: JsModule, node: Node) -> tuple[JsModule, str] | None:
        """The module and local name an identifier, `ns.member` or inline `require()` refers to."""
        if node.type == "identifier":
            name = text_of(node)
            if name in mod.imports:
                return self.exported(*mod.imports[name])
            return mod, name
        if node.type == "member_expression":
            obj = node.child_by_field_name("object")
            prop = text_of(node.child_by_field_name("property"))
            if obj is not None and obj.type == "identifier" and text_of(obj) in mod.imports:
                target, name = mod.imports[text_of(obj)]
                if name in ("*", "default"):
                    return self.exported(target, prop)
        required = (
            self._required(mod, node)
            if node.type in ("call_expression", "member_expression")
            else None
        )
        if required is not None:
            return self.exported(required[0], required[1] or "default")
        return None


def _pattern_names(pattern: Node) -> Iterator[tuple[str, str]]:
    """(local, key) of `{ a, b: c }` (object pattern or object literal)."""
    for child in pattern.named_children:
        if child.type in ("shorthand_property_identifier_pattern", "shorthand_property_identifier"):
            yield text_of(child), text_of(child)
        elif child.type == "pair_pattern" or child.type == "pair":
            key, value = child.child_by_field_name("key"), child.child_by_field_name("value")
            if value is not None and value.type == "identifier":
                yield text_of(value), text_of(key)


def destructured(pattern: Node, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Dotted key paths read by a destructuring pattern: `{ a, b: { c }, d = 1 }` → a, b, b.c, d."""
    for child in pattern.named_children:
        if child.type == "shorthand_property_identifier_pattern":
            yield prefix + text_of(child), child
        elif child.type == "object_assignment_pattern":
            left = child.child_by_field_name("left")
            if left is not None:
                yield prefix + text_of(left), child
        elif child.type == "pair_pattern":
            key, value = child.child_by_field_name("key"), child.child_by_field_name("value")
            name = string_value(key) or text_of(key)
            yield prefix + name, child
            if value is not None and value.type == "object_pattern":
                yield from destructured(value, f"{prefix}{name}.")
