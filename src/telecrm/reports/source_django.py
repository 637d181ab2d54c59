"""Django routes of a `PythonTree`: `urlpatterns` with `path()` / `re_path()` / `include()` prefixes.

Views are function views (methods from `@api_view`, `@require_http_methods`, `request.method`
checks) and class views (their `get` / `post` ... methods); auth from `@login_required`,
`LoginRequiredMixin` and DRF `permission_classes`; data from `request.GET` / `request.data`
reads and a DRF `serializer_class`'s declared fields.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from telecrm.reports.data_points import SchemaField
from telecrm.reports.endpoints import Parameter, _parameter_role
from telecrm.reports.source_auth import auth_kind, auth_kind_from_text, guarded_route
from telecrm.reports.source_pytree import (
    HTTP_METHODS,
    PyModule,
    PythonTree,
    call_name,
    const_str,
    request_reads,
)
from telecrm.reports.source_tree import Route, evidence, join_paths

MAX_INCLUDE_DEPTH = 12  # include() chains deeper than this are a cycle
View = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


class DjangoRoutes:
    def __init__(self, tree: PythonTree) -> None:
        self.tree = tree
        settings = [m for m in tree.modules if m.name.endswith("settings")]
        text = "\n".join(m.file.text for m in settings)
        self.drf_default = (
            auth_kind_from_text(text.split("DEFAULT_AUTHENTICATION_CLASSES", 1)[-1][:600])
            if "DEFAULT_AUTHENTICATION_CLASSES" in text
            else None
        )
        self.url_modules = {m.name: m for m in tree.modules if _patterns(m) is not None}
        roots = [m.split("ROOT_URLCONF", 1)[1] for m in [text] if "ROOT_URLCONF" in text]
        self.roots: list[PyModule] = []
        for raw in roots:
            dotted = raw.split("\n", 1)[0].strip(" =\"'")
            module = tree.module(dotted)
            if module is not None:
                self.roots.append(module)
        if not self.roots:
            included = {name for m in self.url_modules.values() for name in _includes(m)}
            self.roots = [
                m
                for m in self.url_modules.values()
                if not any(m is tree.module(i) for i in included)
            ]

    def routes(self) -> list[Route]:
        out: list[Route] = []
        for root in self.roots:
            out += self._walk(root, "", 0)
        return out

    def _walk(self, mod: PyModule, prefix: str, depth: int) -> list[Route]:
        out: list[Route] = []
        patterns = _patterns(mod)
        if patterns is None or depth > MAX_INCLUDE_DEPTH:
            return out
        for entry in patterns:
            if not (
                isinstance(entry, ast.Call)
                and call_name(entry) in {"path", "re_path", "url"}
                and len(entry.args) >= 2
            ):
                continue
            route = (const_str(entry.args[0]) or "").removeprefix("^").removesuffix("$")
            target = entry.args[1]
            full = join_paths(prefix, route)
            if isinstance(target, ast.Call) and call_name(target) == "include" and target.args:
                dotted = const_str(target.args[0])
                child = self.tree.module(dotted) if dotted else None
                if child is not None:
                    out += self._walk(child, full, depth + 1)
                continue
            view = self._view(mod, target)
            if view is not None:
                out += self._view_routes(
                    view[0], view[1], target, full, evidence(mod.file.rel, entry.lineno)
                )
        return out

    def _view(self, mod: PyModule, expr: ast.AST) -> tuple[PyModule, View] | None:
        if (
            isinstance(expr, ast.Call)
            and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "as_view"
        ):
            expr = expr.func.value
        name = call_name(expr)
        owner: PyModule | None = mod
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            base, attr = mod.imports.get(expr.value.id, ("", None))
            owner = self.tree.module(f"{base}.{attr}" if attr else base)
        elif isinstance(expr, ast.Name) and expr.id in mod.imports:
            base, attr = mod.imports[expr.id]
            owner = self.tree.module(base)
            name = attr or name
        if owner is None:
            return None
        if name in owner.functions:
            return owner, owner.functions[name]
        cls = self.tree.classes.get(name)
        return (cls[0], cls[1]) if cls else None

    def _view_routes(
        self, mod: PyModule, view: View, target: ast.AST, path: str, where: str
    ) -> list[Route]:
        methods, handlers = _methods(view, target)
        auth = self._auth(mod, view)
        view_text = mod.source_of(view)
        out = []
        for method in methods:
            params: list[Parameter] = []
            fields: list[SchemaField] = []
            for name, at, role in request_reads(handlers.get(method, view)):
                if role == "query":
                    kind = _parameter_role(name, "query")
                    if kind:
                        params.append(Parameter(name, kind, evidence(mod.file.rel, at)))
                else:
                    fields.append(SchemaField(name, name, None, evidence(mod.file.rel, at)))
            fields += self._serializer_fields(view)
            out.append(
                guarded_route(
                    method=method,
                    path=path,
                    where=where,
                    framework="django",
                    handler=view.name,
                    handler_text=view_text,
                    auth=auth,
                    parameters=list({p.name: p for p in params}.values()),
                    fields=fields,
                )
            )
        return out

    def _auth(self, mod: PyModule, view: View) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for dec in view.decorator_list:
            name = call_name(dec)
            if name == "permission_classes":
                out += self._permission(mod, ast.unparse(dec), dec.lineno)
            elif name not in {
                "api_view",
                "require_http_methods",
                "csrf_exempt",
                "require_POST",
                "require_GET",
            }:
                kind = auth_kind(name, ast.unparse(dec))
                if kind:
                    out.append((kind, evidence(mod.file.rel, dec.lineno)))
        if isinstance(view, ast.ClassDef):
            bases = " ".join(ast.unparse(b) for b in view.bases)
            if "LoginRequired" in bases or "PermissionRequired" in bases:
                out.append(("session", evidence(mod.file.rel, view.lineno)))
            for stmt in view.body:
                if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "permission_classes" for t in stmt.targets
                ):
                    extra = next(
                        (
                            ast.unparse(s)
                            for s in view.body
                            if isinstance(s, ast.Assign)
                            and "authentication_classes" in ast.unparse(s)
                        ),
                        "",
                    )
                    out += self._permission(mod, ast.unparse(stmt) + extra, stmt.lineno)
        return out

    def _permission(self, mod: PyModule, text: str, at: int) -> list[tuple[str, str]]:
        demands_auth = "IsAuthenticated" in text or "Permission" in text.replace(
            "permission_classes", ""
        )
        if "AllowAny" in text or not demands_auth:
            return []
        kind = (
            auth_kind_from_text(text.split("authentication_classes", 1)[-1])
            if "authentication_classes" in text
            else None
        )
        return [(kind or self.drf_default or "session", evidence(mod.file.rel, at))]

    def _serializer_fields(self, view: View) -> list[SchemaField]:
        if not isinstance(view, ast.ClassDef):
            return []
        name = next(
            (
                call_name(s.value)
                for s in view.body
                if isinstance(s, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "serializer_class" for t in s.targets)
            ),
            None,
        )
        found = self.tree.classes.get(name or "")
        if found is None:
            return []
        smod, cls = found
        out = [SchemaField(f, f, fmt, evidence(smod.file.rel, at)) for f, fmt, at in _declared(cls)]
        for meta in (s for s in cls.body if isinstance(s, ast.ClassDef) and s.name == "Meta"):
            listed: list[str] = []
            model_name = ""
            for stmt in meta.body:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                    if stmt.targets[0].id == "fields" and isinstance(
                        stmt.value, ast.List | ast.Tuple
                    ):
                        listed = [v for v in (const_str(e) for e in stmt.value.elts) if v]
                    elif stmt.targets[0].id == "model":
                        model_name = call_name(stmt.value)
            model = self.tree.classes.get(model_name)
            declared = (
                {f: (fmt, at, model[0].file.rel) for f, fmt, at in _declared(model[1])}
                if model
                else {}
            )
            for f in listed or list(declared):
                fmt, at, rel = declared.get(f, (None, meta.lineno, smod.file.rel))
                out.append(SchemaField(f, f, fmt, evidence(rel, at)))
        return out


def _patterns(mod: PyModule) -> list[ast.expr] | None:
    found: list[ast.expr] | None = None
    for stmt in mod.tree.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "urlpatterns" for t in stmt.targets
        ):
            found = list(getattr(stmt.value, "elts", []))
        elif (
            isinstance(stmt, ast.AugAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == "urlpatterns"
        ):
            found = [*(found or []), *getattr(stmt.value, "elts", [])]
    return found


def _includes(mod: PyModule) -> Iterator[str]:
    for entry in _patterns(mod) or []:
        for node in ast.walk(entry):
            if isinstance(node, ast.Call) and call_name(node) == "include" and node.args:
                dotted = const_str(node.args[0])
                if dotted:
                    yield dotted


def _methods(view: View, target: ast.AST) -> tuple[list[str], dict[str, ast.AST]]:
    if isinstance(view, ast.ClassDef):
        handlers: dict[str, ast.AST] = {
            s.name: s
            for s in view.body
            if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef) and s.name in HTTP_METHODS
        }
        if isinstance(target, ast.Call) and target.args and isinstance(target.args[0], ast.Dict):
            mapping = [const_str(k) for k in target.args[0].keys if k is not None]
            return [m for m in mapping if m], handlers
        return list(handlers) or ["get"], handlers
    for dec in view.decorator_list:
        name = call_name(dec)
        if name in {"require_POST", "require_GET"}:
            return [name.split("_")[1].lower()], {}
        if name in {"api_view", "require_http_methods"} and isinstance(dec, ast.Call) and dec.args:
            listed = [(const_str(e) or "").lower() for e in getattr(dec.args[0], "elts", [])]
            return [m for m in listed if m in HTTP_METHODS] or ["get"], {}
    text = ast.unparse(view)
    methods = ["get"] + [m for m in ("post", "put", "patch", "delete") if f"'{m.upper()}'" in text]
    return methods, {}


def _declared(cls: ast.ClassDef) -> Iterator[tuple[str, str | None, int]]:
    """`email = models.EmailField()` / `serializers.CharField()` class attributes."""
    for stmt in cls.body:
        if (
            isinstance(stmt, ast.Assign)
            and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.targets[0], ast.Name)
        ):
            kind = call_name(stmt.value)
            if kind.endswith("Field") or kind in {"ForeignKey", "ManyToManyField", "OneToOneField"}:
                yield stmt.targets[0].id, ("email" if kind == "EmailField" else None), stmt.lineno
