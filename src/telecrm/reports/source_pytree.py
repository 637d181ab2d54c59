"""Python modules of a source tree, parsed with the stdlib `ast` (never imported or run), indexed.

Names are followed across absolute and relative imports; pydantic models, dataclasses and
TypedDicts are collected so a route's body or response model can be walked into fields.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from telecrm.reports.data_points import SchemaField
from telecrm.reports.source_tree import SourceFile, evidence

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
SECURITY_CLASSES = {
    "OAuth2PasswordBearer": "oauth2",
    "OAuth2AuthorizationCodeBearer": "oauth2",
    "OAuth2": "oauth2",
    "HTTPBearer": "bearer",
    "HTTPBasic": "basic",
    "HTTPDigest": "http_digest",
    "APIKeyHeader": "api_key",
    "APIKeyQuery": "api_key",
    "APIKeyCookie": "api_key",
    "OpenIdConnect": "openid_connect",
    "HTTPBasicAuth": "basic",  # flask_httpauth
    "HTTPTokenAuth": "bearer",
}
ROUTER_CLASSES = {
    "FastAPI": "fastapi",
    "APIRouter": "fastapi",
    "Flask": "flask",
    "Blueprint": "flask",
}
MODEL_BASES = {"BaseModel", "TypedDict", "SQLModel", "Schema", "RootModel"}
NOT_QUERY = {"Request", "Response", "BackgroundTasks", "WebSocket", "Session", "AsyncSession"}
MAX_MODEL_DEPTH = 8  # nested request models deeper than this are not walked


@dataclass
class PyModule:
    file: SourceFile
    name: str
    tree: ast.Module
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    objects: dict[str, tuple[str, ast.Call]] = field(default_factory=dict)  # var -> (class, call)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)

    @cached_property
    def lines(self) -> list[str]:
        return self.file.text.splitlines()

    def source_of(self, node: ast.AST) -> str:
        """The source text of a function or class, for judging what it calls."""
        start, end = getattr(node, "lineno", 1), getattr(node, "end_lineno", None) or 1
        return "\n".join(self.lines[start - 1 : end])


def _dotted(rel: str) -> list[str]:
    parts = rel.removesuffix(".py").split("/")
    return parts[:-1] if parts[-1] == "__init__" else parts


def call_name(node: ast.AST) -> str:
    """`Depends`, `APIRouter`, `router.get` → the last name: `Depends`, `APIRouter`, `get`."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def const_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # f"/{VERSION}/x": keep the literal parts
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{var}"
            for v in node.values
        )
    return None


def keyword_arg(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


class PythonTree:
    """Every Python module of a tree, indexed so names can be followed across imports."""

    def __init__(self, files: list[SourceFile]) -> None:
        self.modules: list[PyModule] = []
        self.by_name: dict[str, PyModule] = {}
        self.models: dict[str, tuple[PyModule, ast.ClassDef]] = {}
        self.functions: dict[str, tuple[PyModule, ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.security: dict[str, tuple[str, str]] = {}  # var -> (kind, evidence)
        self.frameworks: set[str] = set()
        self.syntax_errors: list[str] = []
        self.classes: dict[str, tuple[PyModule, ast.ClassDef]] = {}
        for f in files:
            try:
                tree = ast.parse(f.text, filename=f.rel)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                self.syntax_errors.append(f.rel)
                continue
            parts = _dotted(f.rel)
            mod = PyModule(f, ".".join(parts), tree)
            self.modules.append(mod)
            for i in range(len(parts)):
                self.by_name.setdefault(".".join(parts[i:]), mod)
            self._index(mod, f.rel.endswith("__init__.py"))
        grew = True
        while grew:  # a model is a BaseModel / TypedDict / dataclass, or a subclass of a model
            grew = False
            for name, (mod, cls) in self.classes.items():
                if name not in self.models and _is_model(cls, self.models):
                    self.models[name] = (mod, cls)
                    grew = True

    def _index(self, mod: PyModule, is_package: bool) -> None:
        package = mod.name.split(".") if is_package else mod.name.split(".")[:-1]
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    mod.imports[a.asname or a.name.split(".")[0]] = (
                        a.name if a.asname else a.name.split(".")[0],
                        None,
                    )
                    self._note_framework(a.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package[: len(package) - node.level + 1] if node.level > 1 else package
                    base = ".".join([*up, base] if base else up)
                self._note_framework(base)
                for a in node.names:
                    mod.imports[a.asname or a.name] = (base, a.name)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                cls = call_name(node.value)
                for target in node.targets:
                    if isinstance(target, ast.Name | ast.Attribute):
                        var = target.id if isinstance(target, ast.Name) else target.attr
                        if cls in ROUTER_CLASSES or cls in SECURITY_CLASSES:
                            mod.objects[var] = (cls, node.value)
                        if cls in SECURITY_CLASSES:
                            self.security[var] = (
                                SECURITY_CLASSES[cls],
                                evidence(mod.file.rel, node.lineno),
                            )
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                mod.functions.setdefault(node.name, node)
                self.functions.setdefault(node.name, (mod, node))
            elif isinstance(node, ast.ClassDef):
                self.classes.setdefault(node.name, (mod, node))

    def _note_framework(self, module: str) -> None:
        top = module.split(".")[0]
        if top in {"fastapi", "flask", "django", "rest_framework", "starlette"}:
            self.frameworks.add({"rest_framework": "django", "starlette": "fastapi"}.get(top, top))

    def module(self, name: str) -> PyModule | None:
        return self.by_name.get(name)

    def resolve(self, mod: PyModule, expr: ast.AST, depth: int = 0) -> tuple[PyModule, str] | None:
        """The module and variable an expression names, following imports."""
        if depth > 8:
            return None
        if isinstance(expr, ast.Name):
            if expr.id in mod.objects or expr.id in mod.functions:
                return mod, expr.id
            if expr.id in mod.imports:
                base, attr = mod.imports[expr.id]
                target = self.module(base)
                if attr is not None and target is not None and target is not mod:
                    return self.resolve(target, ast.Name(attr), depth + 1)
            return None
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            imported = mod.imports.get(expr.value.id)
            if imported is None:
                return None
            base, attr = imported
            target = self.module(f"{base}.{attr}" if attr else base)
            if target is not None and target is not mod:
                return self.resolve(target, ast.Name(expr.attr), depth + 1)
        return None

    def model_fields(
        self, name: str, prefix: str = "", stack: tuple[str, ...] = ()
    ) -> list[SchemaField]:
        """Fields of a pydantic model / dataclass / TypedDict, nested models walked, outermost first."""
        found = self.models.get(name)
        if found is None or name in stack or len(stack) > MAX_MODEL_DEPTH:
            return []
        mod, cls = found
        out: list[SchemaField] = []
        for base in cls.bases:  # inherited fields first, as pydantic orders them
            base_name = call_name(base)
            if base_name in self.models and base_name not in MODEL_BASES:
                out += self.model_fields(base_name, prefix, (*stack, name))
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                fname = stmt.target.id
                path = f"{prefix}.{fname}" if prefix else fname
                inner, is_list = self.model_of(stmt.annotation)
                text = ast.unparse(stmt.annotation)
                fmt = "email" if "EmailStr" in text or "EmailField" in text else None
                out.append(SchemaField(path, fname, fmt, evidence(mod.file.rel, stmt.lineno)))
                if inner:
                    out += self.model_fields(
                        inner, path + ("[]" if is_list else ""), (*stack, name)
                    )
        return out

    def model_of(self, annotation: ast.AST | None) -> tuple[str | None, bool]:
        """The model class an annotation names (through Optional, list, Annotated) and if a list."""
        if annotation is None:
            return None, False
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            try:
                annotation = ast.parse(annotation.value, mode="eval").body
            except SyntaxError:
                return None, False
        if isinstance(annotation, ast.Name | ast.Attribute):
            name = call_name(annotation)
            return (name, False) if name in self.models else (None, False)
        if isinstance(annotation, ast.BinOp):  # Model | None
            for side in (annotation.left, annotation.right):
                found = self.model_of(side)
                if found[0]:
                    return found
        if isinstance(annotation, ast.Subscript):
            outer = call_name(annotation.value)
            args = (
                annotation.slice.elts
                if isinstance(annotation.slice, ast.Tuple)
                else [annotation.slice]
            )
            if outer == "Annotated":
                args = args[:1]
            for arg in args:
                inner, _ = self.model_of(arg)
                if inner:
                    return inner, outer in {"list", "List", "Sequence", "set", "Set", "tuple"}
        return None, False


def _is_model(cls: ast.ClassDef, models: Mapping[str, object]) -> bool:
    if any(call_name(d) == "dataclass" for d in cls.decorator_list):
        return True
    return any(call_name(b) in MODEL_BASES or call_name(b) in models for b in cls.bases)


QUERY_HOLDERS = {"args", "GET", "query_params"}
BODY_HOLDERS = {"json", "form", "POST", "data", "values"}


def request_reads(func: ast.AST) -> Iterator[tuple[str, int, str]]:
    """(name, line, "query"|"body") for `request.args.get("x")`, `request.json["x"]`, `data.get("x")`."""
    body_vars: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call | ast.Attribute):
            text = ast.unparse(node.value)
            if text.startswith(
                (
                    "request.get_json",
                    "request.json",
                    "request.form",
                    "request.data",
                    "json.loads(request",
                )
            ):
                body_vars |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    for node in ast.walk(func):
        holder: ast.AST | None = None
        key: str | None = None
        if isinstance(node, ast.Subscript):
            holder, key = node.value, const_str(node.slice)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"get", "getlist"}
            and node.args
        ):
            holder, key = node.func.value, const_str(node.args[0])
        if holder is None or key is None:
            continue
        if (
            isinstance(holder, ast.Attribute)
            and isinstance(holder.value, ast.Name)
            and holder.value.id == "request"
        ):
            if holder.attr in QUERY_HOLDERS:
                yield key, getattr(node, "lineno", 0), "query"
            elif holder.attr in BODY_HOLDERS:
                yield key, getattr(node, "lineno", 0), "body"
        elif (isinstance(holder, ast.Name) and holder.id in body_vars) or (
            isinstance(holder, ast.Call) and ast.unparse(holder).startswith("request.get_json")
        ):
            yield key, getattr(node, "lineno", 0), "body"
