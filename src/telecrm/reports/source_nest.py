"""NestJS routes of a `JsTree`: `@Controller` prefixes, `@Get(':id')` methods, guards, DTO fields."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tree_sitter import Node

from telecrm.reports.data_points import SchemaField
from telecrm.reports.endpoints import Parameter, _parameter_role
from telecrm.reports.source_auth import auth_kind, guarded_route
from telecrm.reports.source_js import JsModule, JsTree, line, string_value, text_of, walk
from telecrm.reports.source_tree import Route, evidence, join_paths

NEST_METHODS = {"Get", "Post", "Put", "Patch", "Delete", "Head", "Options", "All"}
MAX_DTO_DEPTH = 8  # nested DTOs deeper than this are not walked
_TYPE_NAME = re.compile(r"^(?:Array<)?([A-Z]\w*)(?:>|\[\])?$")


@dataclass(frozen=True, slots=True)
class _Property:
    name: str
    type_text: str
    fmt: str | None
    evidence: str


def _decorator_call(dec: Node) -> tuple[str, list[Node]]:
    """`@Get(':id')` → ("Get", [':id' node]); `@Injectable` → ("Injectable", [])."""
    inner = dec.named_children[0] if dec.named_children else None
    if inner is not None and inner.type == "call_expression":
        args = inner.child_by_field_name("arguments")
        return text_of(inner.child_by_field_name("function")), list(
            args.named_children
        ) if args else []
    return text_of(inner), []


def _decorators(node: Node) -> list[Node]:
    own = [c for c in node.children if c.type == "decorator"]
    parent = node.parent
    if parent is not None and parent.type == "export_statement":
        own = [c for c in parent.children if c.type == "decorator"] + own
    return own


class NestRoutes:
    def __init__(self, tree: JsTree) -> None:
        self.tree = tree
        self.types: dict[str, list[_Property]] = {}
        self.global_prefix = ""
        self.global_guards: list[tuple[str, str]] = []
        self.controllers: list[tuple[JsModule, Node]] = []
        for mod in tree.modules.values():
            if mod.file.language in ("typescript", "tsx") or "@nestjs" in mod.file.text:
                self._index(mod)

    def _index(self, mod: JsModule) -> None:
        for node in walk(mod.root):
            if node.type in ("class_declaration", "interface_declaration"):
                name = text_of(node.child_by_field_name("name"))
                self.types.setdefault(name, list(self._properties(mod, node)))
                if node.type == "class_declaration" and any(
                    _decorator_call(d)[0] == "Controller" for d in _decorators(node)
                ):
                    self.controllers.append((mod, node))
            elif node.type == "call_expression":
                callee = text_of(node.child_by_field_name("function"))
                args = node.child_by_field_name("arguments")
                first = args.named_children[0] if args and args.named_children else None
                if callee.endswith(".setGlobalPrefix"):
                    self.global_prefix = string_value(first) or ""
                elif callee.endswith(".useGlobalGuards") and first is not None:
                    kind = auth_kind(text_of(first), text_of(first))
                    if kind:
                        self.global_guards.append((kind, evidence(mod.file.rel, line(node))))

    def _properties(self, mod: JsModule, node: Node) -> list[_Property]:
        body = node.child_by_field_name("body")
        out = []
        for member in body.named_children if body is not None else []:
            if member.type not in ("public_field_definition", "property_signature"):
                continue
            name = text_of(member.child_by_field_name("name"))
            type_text = text_of(member.child_by_field_name("type")).lstrip(":").strip()
            decorators = " ".join(text_of(d) for d in member.children if d.type == "decorator")
            fmt = (
                "email" if "IsEmail" in decorators else ("date" if "IsDate" in decorators else None)
            )
            out.append(_Property(name, type_text, fmt, evidence(mod.file.rel, line(member))))
        return out

    def dto_fields(
        self, type_text: str, prefix: str = "", stack: tuple[str, ...] = ()
    ) -> list[SchemaField]:
        match = _TYPE_NAME.match(type_text.replace(" ", "").split("|")[0])
        if match is None or match.group(1) not in self.types:
            return []
        name = match.group(1)
        if name in stack or len(stack) > MAX_DTO_DEPTH:
            return []
        if type_text.endswith("[]") or type_text.startswith("Array<"):
            prefix += "[]"
        out: list[SchemaField] = []
        for p in self.types[name]:
            path = f"{prefix}.{p.name}" if prefix else p.name
            out.append(SchemaField(path, p.name, p.fmt, p.evidence))
            out += self.dto_fields(p.type_text, path, (*stack, name))
        return out

    def routes(self) -> list[Route]:
        out: list[Route] = []
        for mod, cls in self.controllers:
            prefix, class_guards = "", []
            for dec in _decorators(cls):
                name, args = _decorator_call(dec)
                if name == "Controller" and args:
                    prefix = string_value(args[0]) or _path_in_options(args[0])
                class_guards += self._guards(mod, dec, name, args)
            body = cls.child_by_field_name("body")
            pending: list[Node] = []
            for member in body.children if body is not None else []:
                if member.type == "decorator":
                    pending.append(member)
                    continue
                if member.type == "method_definition":
                    out += self._method(mod, member, pending, prefix, class_guards)
                pending = []
        return out

    def _guards(
        self, mod: JsModule, dec: Node, name: str, args: list[Node]
    ) -> list[tuple[str, str]]:
        if name != "UseGuards":
            return []
        kinds = []
        for arg in args:
            guard = (
                text_of(arg.child_by_field_name("function"))
                if arg.type == "call_expression"
                else text_of(arg)
            )
            kind = auth_kind(guard, text_of(arg))
            if kind:
                kinds.append((kind, evidence(mod.file.rel, line(dec))))
        return kinds

    def _method(
        self,
        mod: JsModule,
        method: Node,
        decorators: list[Node],
        prefix: str,
        class_guards: list[tuple[str, str]],
    ) -> list[Route]:
        verbs: list[tuple[str, str, Node]] = []
        guards: list[tuple[str, str]] = []
        public = False
        for dec in decorators:
            name, args = _decorator_call(dec)
            if name in NEST_METHODS:
                verbs.append((name.lower(), (string_value(args[0]) if args else "") or "", dec))
            guards += self._guards(mod, dec, name, args)
            public = public or name in {"Public", "AllowAnonymous", "SkipAuth"}
        if not verbs:
            return []
        auth = guards if public else [*self.global_guards, *class_guards, *guards]
        params, fields = self._params(mod, method)
        handler = text_of(method.child_by_field_name("name"))
        text = text_of(method)
        out = []
        for verb, sub, dec in verbs:
            path = join_paths(self.global_prefix, prefix, sub or "")
            where = evidence(mod.file.rel, line(dec))
            out.append(
                guarded_route(
                    method="get" if verb == "all" else verb,
                    path=path,
                    where=where,
                    framework="nestjs",
                    handler=handler,
                    handler_text=text,
                    auth=auth,
                    parameters=params,
                    fields=fields,
                )
            )
        return out

    def _params(self, mod: JsModule, method: Node) -> tuple[list[Parameter], list[SchemaField]]:
        params: list[Parameter] = []
        fields: list[SchemaField] = []
        formal = method.child_by_field_name("parameters")
        for p in formal.named_children if formal is not None else []:
            decs = [c for c in p.children if c.type == "decorator"]
            if not decs:
                continue
            name, args = _decorator_call(decs[0])
            type_text = text_of(p.child_by_field_name("type")).lstrip(":").strip()
            where = evidence(mod.file.rel, line(p))
            key = string_value(args[0]) if args else None
            if name == "Body":
                if key:
                    fields.append(SchemaField(key, key, None, where))
                else:
                    fields += self.dto_fields(type_text)
            elif name == "Query":
                names = (
                    [key]
                    if key
                    else [f.name for f in self.dto_fields(type_text) if "." not in f.path]
                )
                for n in names:
                    role = _parameter_role(n, "query")
                    if role:
                        params.append(Parameter(n, role, where))
        return params, fields


def _path_in_options(node: Node) -> str:
    """`@Controller({ path: 'patients', version: '1' })` → 'patients'."""
    for pair in (c for c in node.named_children if c.type == "pair"):
        if text_of(pair.child_by_field_name("key")) == "path":
            return string_value(pair.child_by_field_name("value")) or ""
    return ""
