"""Express routes of a `JsTree`: full paths through nested routers, auth middleware, handler reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tree_sitter import Node

from telecrm.reports.data_points import SchemaField
from telecrm.reports.endpoints import Parameter, _parameter_role
from telecrm.reports.source_auth import auth_kind, guarded_route, verifies_signature
from telecrm.reports.source_js import (
    _IDENT_PATH,
    HTTP_METHODS,
    MAX_MOUNT_DEPTH,
    JsModule,
    JsTree,
    destructured,
    line,
    string_value,
    text_of,
    walk,
)
from telecrm.reports.source_tree import Route, evidence, join_paths, normalise_route_path

# Middleware that keeps state or headers but lets every caller through: not auth.
NOT_AUTH_PACKAGES = frozenset(
    {"express-session", "cookie-session", "cookie-parser", "cors", "helmet", "morgan",
     "body-parser", "compression", "express-rate-limit", "connect-redis", "multer", "csurf"}
)  # fmt: skip
NOT_AUTH_CALLS = frozenset(
    {"passport.initialize", "passport.session", "express.json", "express.raw"}
)
RouterId = tuple[str, str]  # (file, local variable)
Auth = list[tuple[str, str]]  # (kind, evidence)


@dataclass
class _Use:
    line: int
    prefix: str | None
    auth: Auth


@dataclass
class _Mount:
    parent: RouterId
    prefix: str
    auth: Auth
    line: int


@dataclass
class _RawRoute:
    mod: JsModule
    owner: RouterId
    method: str
    path: str
    middleware: list[Node]
    handler: Node
    line: int


class ExpressRoutes:
    def __init__(self, tree: JsTree) -> None:
        self.tree = tree
        self.raw: list[_RawRoute] = []
        self.uses: dict[RouterId, list[_Use]] = {}
        self.mounts: dict[RouterId, list[_Mount]] = {}
        for mod in tree.modules.values():
            if mod.routers or any(v[0] == "pkg:express" for v in mod.imports.values()):
                self._collect(mod)

    def _router(self, mod: JsModule, node: Node | None) -> RouterId | None:
        if node is None:
            return None
        found = self.tree.lookup(mod, node)
        if found is None:
            return None
        target, local = found
        return (target.file.rel, local) if local in target.routers else None

    def _collect(self, mod: JsModule) -> None:
        for call in walk(mod.root):
            if call.type != "call_expression":
                continue
            callee = call.child_by_field_name("function")
            args_node = call.child_by_field_name("arguments")
            if callee is None or callee.type != "member_expression" or args_node is None:
                continue
            prop = text_of(callee.child_by_field_name("property"))
            obj = callee.child_by_field_name("object")
            args = [a for a in args_node.named_children if a.type != "comment"]
            route_path: str | None = None
            while obj is not None and obj.type == "call_expression" and prop in HTTP_METHODS:
                inner = obj.child_by_field_name("function")  # router.route('/x').get(h).put(h)
                if inner is None or inner.type != "member_expression":
                    break
                if text_of(inner.child_by_field_name("property")) not in HTTP_METHODS:
                    break
                obj = inner.child_by_field_name("object")
            if obj is not None and obj.type == "call_expression":  # router.route('/x').get(h)
                inner = obj.child_by_field_name("function")
                if inner is not None and text_of(inner.child_by_field_name("property")) == "route":
                    inner_args = obj.child_by_field_name("arguments")
                    first = (
                        inner_args.named_children[0]
                        if inner_args and inner_args.named_children
                        else None
                    )
                    route_path, obj = string_value(first), inner.child_by_field_name("object")
            owner = self._router(mod, obj)
            if owner is None:
                continue
            if prop in HTTP_METHODS and route_path is not None and args:
                self.raw.append(
                    _RawRoute(mod, owner, prop, route_path, args[:-1], args[-1], line(call))
                )
            elif prop in HTTP_METHODS and len(args) >= 2 and string_value(args[0]) is not None:
                path = string_value(args[0]) or ""
                self.raw.append(_RawRoute(mod, owner, prop, path, args[1:-1], args[-1], line(call)))
            elif prop == "use" and args:
                self._use(mod, owner, args, line(call))

    def _use(self, mod: JsModule, owner: RouterId, args: list[Node], at: int) -> None:
        prefix = string_value(args[0])
        rest = args[1:] if prefix is not None else args
        auth: Auth = []
        mounted = False
        for arg in rest:
            child = self._router(mod, arg)
            if child is not None and child != owner:
                self.mounts.setdefault(child, []).append(
                    _Mount(owner, prefix or "", list(auth), at)
                )
                mounted = True
                continue
            kind = self._middleware_kind(mod, arg)
            if kind:
                auth.append((kind, evidence(mod.file.rel, line(arg))))
        if auth and not mounted:
            self.uses.setdefault(owner, []).append(_Use(at, prefix, auth))

    def _middleware_kind(self, mod: JsModule, node: Node) -> str | None:
        name, text = text_of(node), ""
        if node.type in ("identifier", "member_expression"):
            found = self.tree.lookup(mod, node)
            if found is not None:
                target, local = found
                name = local or name
                source = target.functions.get(local) or target.values.get(local)
                text = text_of(source)
            else:
                imported = mod.imports.get(name.split(".")[0])
                text = imported[0] if imported else ""
        elif node.type == "call_expression":
            name, text = text_of(node.child_by_field_name("function")), text_of(node)
            package = mod.imports.get(name.split(".")[0], ("", ""))[0].removeprefix("pkg:")
            if package in NOT_AUTH_PACKAGES or name in NOT_AUTH_CALLS:
                return None
        elif node.type in ("arrow_function", "function_expression", "function"):
            name, text = "", text_of(node)
        else:
            return None
        if verifies_signature(f"{name} {text}"):
            return "signature"
        return auth_kind(name, text)

    def _chains(self, owner: RouterId, depth: int = 0) -> Iterator[tuple[str, Auth]]:
        """(full prefix, inherited auth) for every place the router is mounted from an app."""
        mounts = self.mounts.get(owner, [])
        if not mounts or depth > MAX_MOUNT_DEPTH:
            yield "", []
            return
        for m in mounts:
            for prefix, auth in self._chains(m.parent, depth + 1):
                before = self._uses_before(m.parent, m.line, m.prefix)
                yield join_paths(prefix, m.prefix), [*auth, *before, *m.auth]

    def _uses_before(self, owner: RouterId, at: int, path: str) -> Auth:
        path = normalise_route_path(path)
        out: Auth = []
        for use in self.uses.get(owner, []):
            scope = normalise_route_path(use.prefix) if use.prefix is not None else "/"
            if use.line < at and (scope == "/" or path == scope or path.startswith(scope + "/")):
                out += use.auth
        return out

    def _handler(self, mod: JsModule, node: Node) -> tuple[JsModule, Node, str] | None:
        if node.type in ("arrow_function", "function_expression", "function"):
            return mod, node, ""
        if node.type in ("identifier", "member_expression"):
            found = self.tree.lookup(mod, node)
            if found is not None and found[1] in found[0].functions:
                return found[0], found[0].functions[found[1]], found[1]
            return None
        if node.type == "call_expression":  # asyncHandler(async (req, res) => ...)
            args = node.child_by_field_name("arguments")
            inner = args.named_children[-1] if args and args.named_children else None
            return self._handler(mod, inner) if inner is not None else None
        return None

    def routes(self) -> list[Route]:
        out: list[Route] = []
        for raw in self.raw:
            where = evidence(raw.mod.file.rel, raw.line)
            own: Auth = []
            for mw in raw.middleware:
                kind = self._middleware_kind(raw.mod, mw)
                if kind:
                    own.append((kind, evidence(raw.mod.file.rel, line(mw))))
            handler = self._handler(raw.mod, raw.handler)
            params, fields = reads(handler[0].file.rel, handler[1]) if handler else ([], [])
            handler_name = handler[2] if handler else ""
            handler_text = text_of(handler[1]) if handler else ""
            for prefix, inherited in self._chains(raw.owner):
                path = join_paths(prefix, raw.path)
                auth = [*inherited, *self._uses_before(raw.owner, raw.line, raw.path), *own]
                out.append(
                    _route(raw, path, where, auth, params, fields, handler_name, handler_text)
                )
        return out


def _route(
    raw: _RawRoute,
    path: str,
    where: str,
    auth: Auth,
    params: list[Parameter],
    fields: list[SchemaField],
    handler_name: str,
    handler_text: str,
) -> Route:
    return guarded_route(
        method="get" if raw.method == "all" else raw.method,
        path=path,
        where=where,
        framework="express",
        handler=handler_name,
        handler_text=handler_text,
        auth=auth,
        parameters=params,
        fields=fields,
    )


def _first_param(fn: Node) -> str:
    single = fn.child_by_field_name("parameter")
    if single is not None:
        return text_of(single)
    params = fn.child_by_field_name("parameters")
    for p in params.named_children if params is not None else []:
        pattern = (
            p.child_by_field_name("pattern")
            if p.type in ("required_parameter", "optional_parameter")
            else p
        )
        if pattern is not None and pattern.type == "identifier":
            return text_of(pattern)
        return "req"
    return "req"


def _unwrap(value: Node | None) -> str:
    """`req.body`, `req.body as Dto`, `req.body || {}`, `await req.body` → `req.body`."""
    while value is not None and value.type in (
        "as_expression",
        "await_expression",
        "parenthesized_expression",
        "binary_expression",
        "non_null_expression",
        "satisfies_expression",
    ):
        value = value.named_children[0] if value.named_children else None
    return text_of(value).replace("?.", ".")


def reads(rel: str, fn: Node) -> tuple[list[Parameter], list[SchemaField]]:
    """Query parameters and body fields a handler reads from `req.query` / `req.body`."""
    req = _first_param(fn)
    holders = {f"{req}.body": "body", f"{req}.query": "query"}
    for node in walk(fn):  # `const body = req.body;` makes `body.x` a body read too
        if node.type == "variable_declarator":
            name = node.child_by_field_name("name")
            role = holders.get(_unwrap(node.child_by_field_name("value")))
            if role and name is not None and name.type == "identifier":
                holders[text_of(name)] = role
    found: dict[tuple[str, str], tuple[str, int]] = {}
    for node in walk(fn):
        if node.type == "member_expression":
            parent = node.parent
            if (
                parent is not None
                and parent.type == "call_expression"
                and parent.child_by_field_name("function") == node
            ):
                continue  # req.body.email.trim(): `trim` is a method, `email` is read below
            text = text_of(node).replace("?.", ".")
            for base, role in holders.items():
                if text.startswith(base + "."):
                    rest = text[len(base) + 1 :]
                    if _IDENT_PATH.match(rest):
                        found.setdefault(
                            (role, rest if role == "body" else rest.split(".")[0]), ("", line(node))
                        )
        elif node.type == "subscript_expression":
            role = holders.get(_unwrap(node.child_by_field_name("object")))
            key = string_value(node.child_by_field_name("index"))
            if role and key:
                found.setdefault((role, key), ("", line(node)))
        elif node.type == "variable_declarator":
            name = node.child_by_field_name("name")
            role = holders.get(_unwrap(node.child_by_field_name("value")))
            if role and name is not None and name.type == "object_pattern":
                for path, node_at in destructured(name):
                    if role == "body" or "." not in path:
                        found.setdefault((role, path), ("", line(node_at)))
    params: list[Parameter] = []
    fields: list[SchemaField] = []
    for (role, path), (_, at) in sorted(found.items(), key=lambda kv: (kv[1][1], kv[0][1])):
        if role == "query":
            kind = _parameter_role(path, "query")
            if kind:
                params.append(Parameter(path, kind, evidence(rel, at)))
        else:
            fields.append(SchemaField(path, path.rsplit(".", 1)[-1], None, evidence(rel, at)))
    return params, fields
