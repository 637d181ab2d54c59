"""FastAPI and Flask routes of a `PythonTree`, with prefixes and auth resolved across modules.

Routers are followed across modules: `app.include_router(patients.router, prefix="/api")` and
`app.register_blueprint(bp, url_prefix="/v1")` put the router's routes under the prefix, with
the router's and the mount's auth dependencies.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from telecrm.reports.data_points import SchemaField
from telecrm.reports.endpoints import Parameter, _parameter_role
from telecrm.reports.source_auth import auth_kind, guarded_route, verifies_signature
from telecrm.reports.source_pytree import (
    HTTP_METHODS,
    NOT_QUERY,
    ROUTER_CLASSES,
    PyModule,
    PythonTree,
    call_name,
    const_str,
    keyword_arg,
    request_reads,
)
from telecrm.reports.source_tree import Route, evidence, join_paths


@dataclass
class _Mount:
    parent: tuple[str, str]  # (module, var)
    prefix: str
    auth: list[tuple[str, str]]
    line: int


@dataclass
class _RawRoute:
    mod: PyModule
    owner: tuple[str, str]
    method: str
    path: str
    func: ast.FunctionDef | ast.AsyncFunctionDef
    decorator: ast.Call
    framework: str


class PythonRoutes:
    """FastAPI and Flask routes of a `PythonTree`, with prefixes and auth resolved across modules."""

    def __init__(self, tree: PythonTree) -> None:
        self.tree = tree
        self.raw: list[_RawRoute] = []
        self.mounts: dict[tuple[str, str], list[_Mount]] = {}
        self.own_prefix: dict[tuple[str, str], str] = {}
        self.own_auth: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.kind: dict[tuple[str, str], str] = {}
        self.replaced: set[tuple[str, str]] = set()
        for mod in tree.modules:
            self._collect(mod)

    def _collect(self, mod: PyModule) -> None:
        for var, (cls, call) in mod.objects.items():
            if cls not in ROUTER_CLASSES:
                continue
            key = (mod.name, var)
            self.kind[key] = cls
            prefix = const_str(keyword_arg(call, "prefix") or keyword_arg(call, "url_prefix")) or ""
            self.own_prefix[key] = prefix
            self.own_auth[key] = self._deps_auth(mod, keyword_arg(call, "dependencies"))
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for dec in node.decorator_list:
                    self._route_from_decorator(mod, node, dec)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                self._mount_from_call(mod, node)

    def _owner(self, mod: PyModule, expr: ast.AST) -> tuple[str, str] | None:
        found = self.tree.resolve(mod, expr)
        if found is None:
            return None
        target, var = found
        return (target.name, var) if var in target.objects else None

    def _route_from_decorator(
        self, mod: PyModule, func: ast.FunctionDef | ast.AsyncFunctionDef, dec: ast.expr
    ) -> None:
        if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)):
            return
        attr = dec.func.attr
        if attr not in (*HTTP_METHODS, "route", "api_route"):
            return
        owner = self._owner(mod, dec.func.value)
        if owner is None:
            return
        cls = self.kind.get(owner, "")
        framework = ROUTER_CLASSES.get(cls, "")
        path = const_str(
            dec.args[0] if dec.args else keyword_arg(dec, "path") or keyword_arg(dec, "rule")
        )
        if path is None or not framework:
            return
        if attr in HTTP_METHODS:
            methods = [attr]
        else:
            listed = keyword_arg(dec, "methods")
            methods = [
                m.lower() for m in (const_str(e) for e in getattr(listed, "elts", [])) if m
            ] or ["get"]
        for method in methods:
            if method in HTTP_METHODS:
                self.raw.append(_RawRoute(mod, owner, method, path, func, dec, framework))

    def _mount_from_call(self, mod: PyModule, call: ast.Call) -> None:
        assert isinstance(call.func, ast.Attribute)
        if call.func.attr not in {"include_router", "register_blueprint"} or not call.args:
            return
        parent = self._owner(mod, call.func.value)
        child = self._owner(mod, call.args[0])
        if parent is None or child is None:
            return
        prefix = const_str(keyword_arg(call, "prefix") or keyword_arg(call, "url_prefix"))
        if call.func.attr == "register_blueprint" and prefix is not None:
            self.replaced.add(child)  # register_blueprint's url_prefix replaces the blueprint's
        auth = self._deps_auth(mod, keyword_arg(call, "dependencies"))
        self.mounts.setdefault(child, []).append(_Mount(parent, prefix or "", auth, call.lineno))

    # --- auth -------------------------------------------------------------------------------

    def _deps_auth(self, mod: PyModule, deps: ast.AST | None) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for dep in getattr(deps, "elts", []) or []:
            out += self._depends_auth(mod, dep)
        return out

    def _depends_auth(self, mod: PyModule, call: ast.AST, depth: int = 0) -> list[tuple[str, str]]:
        """Auth kinds behind one `Depends(x)` / `Security(x)`."""
        if not (isinstance(call, ast.Call) and call_name(call) in {"Depends", "Security"}):
            return []
        target = call.args[0] if call.args else keyword_arg(call, "dependency")
        if target is None:
            return []
        where = evidence(mod.file.rel, call.lineno)
        name = call_name(target)
        if name in self.tree.security:
            return [(self.tree.security[name][0], where)]
        found = self.tree.resolve(mod, target)
        fmod, fname = found if found else (None, name)
        func = fmod.functions.get(fname) if fmod else None
        if func is None and name in self.tree.functions:
            fmod, func = self.tree.functions[name]
        if func is None or fmod is None:
            kind = auth_kind(name)
            return [(kind, where)] if kind else []
        inner = [k for k, _ in self._function_deps(fmod, func, depth + 1)]
        text = fmod.source_of(func)
        if verifies_signature(text):
            return [("signature", where)]
        if "jwt" in text.lower() and (not inner or set(inner) <= {"oauth2", "bearer"}):
            return [("jwt_bearer", where)]
        if inner:
            return [(k, where) for k in inner]
        kind = auth_kind(fname)
        return [(kind, where)] if kind else []

    def _function_deps(
        self, mod: PyModule, func: ast.FunctionDef | ast.AsyncFunctionDef, depth: int = 0
    ) -> list[tuple[str, str]]:
        if depth > 6:
            return []
        out: list[tuple[str, str]] = []
        args = func.args
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            out += self._depends_auth(mod, default, depth)
        for arg in [*args.args, *args.kwonlyargs]:
            if (
                isinstance(arg.annotation, ast.Subscript)
                and call_name(arg.annotation.value) == "Annotated"
            ):
                slice_ = arg.annotation.slice
                for meta in slice_.elts[1:] if isinstance(slice_, ast.Tuple) else []:
                    out += self._depends_auth(mod, meta, depth)
        return out

    def _decorator_auth(self, raw: _RawRoute) -> list[tuple[str, str]]:
        """Flask: `@login_required`, `@jwt_required()`, `@auth.login_required`, `@require_api_key`."""
        out: list[tuple[str, str]] = []
        for dec in raw.func.decorator_list:
            if dec is raw.decorator:
                continue
            text = ast.unparse(dec)
            if isinstance(dec, ast.Attribute) and isinstance(dec.value, ast.Name):
                owner = dec.value.id
                security = self.tree.security.get(owner)
                if security:
                    out.append((security[0], evidence(raw.mod.file.rel, dec.lineno)))
                    continue
            name = call_name(dec)
            fn = self.tree.functions.get(name)
            kind = auth_kind(
                name, fn[0].source_of(fn[1]) if fn and name != "login_required" else text
            )
            if kind:
                out.append((kind, evidence(raw.mod.file.rel, dec.lineno)))
        return out

    # --- assembling -------------------------------------------------------------------------

    def _chains(
        self, owner: tuple[str, str], seen: frozenset[tuple[str, str]] = frozenset()
    ) -> Iterator[tuple[str, list[tuple[str, str]]]]:
        """(full prefix, inherited auth) for each place the router is mounted, up to the app."""
        own = "" if owner in self.replaced else self.own_prefix.get(owner, "")
        auth = self.own_auth.get(owner, [])
        mounts = self.mounts.get(owner, [])
        if not mounts or owner in seen:
            yield own, list(auth)
            return
        for m in mounts:
            for prefix, inherited in self._chains(m.parent, seen | {owner}):
                yield join_paths(prefix, m.prefix, own), [*inherited, *m.auth, *auth]

    def routes(self) -> list[Route]:
        out: list[Route] = []
        for raw in self.raw:
            where = evidence(raw.mod.file.rel, raw.decorator.lineno)
            route_auth = [
                *self._deps_auth(raw.mod, keyword_arg(raw.decorator, "dependencies")),
                *self._function_deps(raw.mod, raw.func),
                *self._decorator_auth(raw),
            ]
            for prefix, inherited in self._chains(raw.owner):
                path = join_paths(prefix, raw.path)
                out.append(self._route(raw, path, where, [*inherited, *route_auth]))
        return out

    def _route(self, raw: _RawRoute, path: str, where: str, auth: list[tuple[str, str]]) -> Route:
        params, fields = self._data(raw, path)
        return guarded_route(
            method=raw.method,
            path=path,
            where=where,
            framework=raw.framework,
            handler=raw.func.name,
            handler_text=raw.mod.source_of(raw.func),
            auth=auth,
            parameters=params,
            fields=fields,
        )

    def _data(self, raw: _RawRoute, path: str) -> tuple[list[Parameter], list[SchemaField]]:
        params: list[Parameter] = []
        fields: list[SchemaField] = []
        rel = raw.mod.file.rel
        in_path = set(_path_names(path))
        if raw.framework == "fastapi":
            args = raw.func.args
            positional = args.args
            defaults: list[ast.expr | None] = [None] * (
                len(positional) - len(args.defaults)
            ) + list(args.defaults)
            pairs = [
                *zip(positional, defaults, strict=True),
                *zip(args.kwonlyargs, args.kw_defaults, strict=True),
            ]
            for arg, default in pairs:
                if arg.arg in in_path or arg.arg in {"self", "request", "response"}:
                    continue
                dname = call_name(default) if isinstance(default, ast.Call) else ""
                if (
                    isinstance(arg.annotation, ast.Subscript)
                    and call_name(arg.annotation.value) == "Annotated"
                ):
                    metas = getattr(arg.annotation.slice, "elts", [])[1:]
                    dname = next((call_name(m) for m in metas if isinstance(m, ast.Call)), dname)
                if dname in {"Depends", "Security", "Header", "Cookie", "Path", "File", "Form"}:
                    continue
                model, is_list = self.tree.model_of(arg.annotation)
                if model:
                    fields += self.tree.model_fields(model, "[]" if is_list else "")
                elif dname == "Body":
                    fields.append(SchemaField(arg.arg, arg.arg, None, evidence(rel, arg.lineno)))
                elif call_name(arg.annotation) not in NOT_QUERY if arg.annotation else True:
                    role = _parameter_role(arg.arg, "query")
                    if role:
                        params.append(Parameter(arg.arg, role, evidence(rel, arg.lineno)))
            for annotation in (keyword_arg(raw.decorator, "response_model"), raw.func.returns):
                model, is_list = self.tree.model_of(annotation)
                if model:
                    fields += self.tree.model_fields(model, "[]" if is_list else "")
                    break
        else:
            for name, where, role in request_reads(raw.func):
                if role == "query":
                    kind = _parameter_role(name, "query")
                    if kind:
                        params.append(Parameter(name, kind, evidence(rel, where)))
                else:
                    fields.append(SchemaField(name, name, None, evidence(rel, where)))
        return _unique_params(params), fields


def _path_names(path: str) -> list[str]:
    return [s[1:-1] for s in path.split("/") if s.startswith("{") and s.endswith("}")]


def _unique_params(params: list[Parameter]) -> list[Parameter]:
    return list({(p.name, p.role): p for p in params}.values())
