"""The message template catalog: load, lint and render the email and SMS templates.

Templates are files under `messaging/templates/` (`email/NAME.LANG.j2` with blocks `subject`,
`text` and `html`; `sms/NAME.LANG.j2`, a body), listed in `templates/catalog.yaml`. An override
folder may replace any file and add templates listed in its own catalog.yaml. Every file is
linted when the catalog loads (`template_lint.py`): nothing outside the vocabulary of
`context.py`, and no PHI on a channel without a BAA. Rendering runs in Jinja2's immutable
sandbox and sees only the names the template refers to.

Missing values render empty (templates say `| default(...)` where a word is needed); `None` is
never printed. A security template (two-factor code, password reset) whose `secret.*` values are
missing raises `MissingSecret` instead of sending a message without its code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    FileSystemLoader,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from telecrm.messaging.context import VOCABULARY, Brand
from telecrm.messaging.segments import Segments, count_segments
from telecrm.messaging.template_env import sandbox_environment
from telecrm.messaging.template_files import CatalogEntry, read_catalog, stray_files
from telecrm.messaging.template_lint import (
    Reference,
    Scan,
    TemplateCatalogInvalid,
    TemplateError,
    TemplateRefused,
    TemplateSyntaxInvalid,
    TemplateUnknownName,
    check_phi,
    scan_template,
)

__all__ = [
    "BUILTIN_DIR",
    "MissingSecret",
    "RenderedEmail",
    "RenderedSms",
    "TemplateCatalog",
    "TemplateCatalogInvalid",
    "TemplateError",
    "TemplateInfo",
    "TemplateRefused",
    "TemplateSyntaxInvalid",
    "TemplateUnknownName",
    "UnknownTemplate",
]

BUILTIN_DIR = Path(__file__).parent / "templates"
EMAIL_BLOCKS = ("subject", "text", "html")
DEFAULT_LANGUAGE = "en"

Channel = Literal["email", "sms"]


class UnknownTemplate(LookupError):
    """No template of that name on that channel."""


class MissingSecret(LookupError):
    """A security message rendered without the secret it exists to carry."""


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    channel: str
    purpose: str  # transactional | marketing | security
    languages: tuple[str, ...]
    description: str
    paths: Mapping[str, Path]  # language -> file


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    language: str


@dataclass(frozen=True, slots=True)
class RenderedSms:
    body: str
    language: str
    segments: Segments


@dataclass(frozen=True, slots=True)
class _Loaded:
    info: TemplateInfo
    references: frozenset[str]
    phi: frozenset[str]
    files: Mapping[str, str]  # language -> Jinja2 template name
    extends: frozenset[str]  # languages whose file extends a layout (render it whole for HTML)


class TemplateCatalog:
    """Every template, linted; render by name, channel and language."""

    def __init__(
        self,
        loaded: dict[tuple[str, str], _Loaded],
        *,
        text_env: ImmutableSandboxedEnvironment,
        html_env: ImmutableSandboxedEnvironment,
    ) -> None:
        self._loaded = loaded
        self._text_env = text_env
        self._html_env = html_env

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, *, sms_baa: bool = False, override_dir: Path | None = None) -> TemplateCatalog:
        """Read, lint and compile every template; raise a TemplateError naming file and line."""
        if override_dir is not None and not override_dir.is_dir():
            raise TemplateCatalogInvalid(
                "the override folder does not exist",
                template="",
                path=override_dir,
                line=None,
                where=str(override_dir),
            )
        folders = [override_dir, BUILTIN_DIR] if override_dir is not None else [BUILTIN_DIR]
        loader: BaseLoader = (
            ChoiceLoader([FileSystemLoader(str(f)) for f in folders])
            if override_dir is not None
            else FileSystemLoader(str(BUILTIN_DIR))
        )
        text_env = sandbox_environment(loader, html=False)
        html_env = sandbox_environment(loader, html=True)
        entries = read_catalog(BUILTIN_DIR / "catalog.yaml")
        if override_dir is not None and (override_dir / "catalog.yaml").is_file():
            entries.update(read_catalog(override_dir / "catalog.yaml"))
        if override_dir is not None:
            stray_files(override_dir, entries)
        linter = _Linter(text_env, html_env)
        loaded = {
            key: linter.load_entry(entry, has_baa=sms_baa and entry.channel == "sms")
            for key, entry in entries.items()
        }
        return cls(loaded, text_env=text_env, html_env=html_env)

    # -- questions --------------------------------------------------------------------------
    def all(self) -> list[TemplateInfo]:
        return [self._loaded[k].info for k in sorted(self._loaded, key=lambda k: (k[1], k[0]))]

    def _get(self, name: str, channel: str) -> _Loaded:
        try:
            return self._loaded[(name, channel)]
        except KeyError:
            known = sorted(n for n, c in self._loaded if c == channel)
            raise UnknownTemplate(
                f"no {channel} template named {name!r}"
                + (f" (known: {', '.join(known)})" if known else "")
            ) from None

    def get(self, name: str, channel: str) -> TemplateInfo:
        return self._get(name, channel).info

    def references(self, name: str, channel: str) -> frozenset[str]:
        """Every `namespace.attribute` the template's languages use (and their layouts)."""
        return self._get(name, channel).references

    def phi_fields(self, name: str, channel: str) -> frozenset[str]:
        """The catalog fields the template uses that are PHI (only ever on a channel with a BAA)."""
        return self._get(name, channel).phi

    def pick_language(self, name: str, channel: str, patient_language: str | None) -> str:
        """The patient's language if the template has it ("es-MX" -> "es"), else English."""
        languages = self._get(name, channel).info.languages
        wanted = re.split(r"[-_]", (patient_language or "").strip().lower())[0]
        return wanted if wanted in languages else DEFAULT_LANGUAGE

    # -- rendering --------------------------------------------------------------------------
    def render_email(self, name: str, language: str, ctx: Mapping[str, Any]) -> RenderedEmail:
        loaded = self._get(name, "email")
        lang = self.pick_language(name, "email", language)
        values = _scoped(loaded, ctx)
        file = loaded.files[lang]
        text_tpl = self._text_env.get_template(file)
        subject = _render_block(text_tpl, "subject", values)
        text = _render_block(text_tpl, "text", values)
        html_tpl = self._html_env.get_template(file)
        if lang in loaded.extends:
            html = html_tpl.render(values)
        else:
            html = _render_block(html_tpl, "html", values)
        return RenderedEmail(
            subject=" ".join(subject.split()),
            html=html.strip(),
            text=_tidy_text(text),
            language=lang,
        )

    def data_for(self, name: str, channel: str, ctx: Mapping[str, Any]) -> dict[str, Any]:
        """The context cut to what the template refers to: what a SendGrid-hosted dynamic
        template receives as `dynamic_template_data`, so the lint's verdict covers it too."""
        return {ns: v for ns, v in _scoped(self._get(name, channel), ctx).items() if v}

    def render_sms(self, name: str, language: str, ctx: Mapping[str, Any]) -> RenderedSms:
        loaded = self._get(name, "sms")
        lang = self.pick_language(name, "sms", language)
        body = self._text_env.get_template(loaded.files[lang]).render(_scoped(loaded, ctx))
        body = " ".join(body.split())
        return RenderedSms(body=body, language=lang, segments=count_segments(body))


def _render_block(template: Template, block: str, values: dict[str, Any]) -> str:
    render: Callable[[Any], Any] | None = template.blocks.get(block)
    if render is None:
        return ""
    return "".join(render(template.new_context(values)))


def _tidy_text(text: str) -> str:
    lines = [re.sub(r"[ \t]{2,}", " ", line).rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _scoped(loaded: _Loaded, ctx: Mapping[str, Any]) -> dict[str, Any]:
    """Only what the template refers to, without None; brand falls back to the defaults."""
    default_brand = Brand().as_dict()
    values: dict[str, dict[str, Any]] = {ns: {} for ns in VOCABULARY}
    for ref in loaded.references:
        ns, _, attr = ref.partition(".")
        source = ctx.get(ns)
        if isinstance(source, Brand):
            source = source.as_dict()
        value = source.get(attr) if isinstance(source, Mapping) else None
        if value is None and ns == "brand":
            value = default_brand.get(attr)
        if value is not None:
            values[ns][attr] = value
    if loaded.info.purpose == "security":
        missing = sorted(
            r
            for r in loaded.references
            if r.startswith("secret.") and not values["secret"].get(r[7:])
        )
        if missing:
            raise MissingSecret(
                f"{loaded.info.channel}/{loaded.info.name} needs {', '.join(missing)}: "
                "a security message is never sent without it"
            )
    return values


class _Linter:
    """Parses each file once, follows extends/include/import, and applies the lint rules."""

    def __init__(
        self, text_env: ImmutableSandboxedEnvironment, html_env: ImmutableSandboxedEnvironment
    ) -> None:
        self._text_env = text_env
        self._html_env = html_env
        self._scans: dict[str, Scan] = {}

    def load_entry(self, entry: CatalogEntry, *, has_baa: bool) -> _Loaded:
        files: dict[str, str] = {}
        paths: dict[str, Path] = {}
        references: list[Reference] = []
        extends: set[str] = set()
        for lang in entry.languages:
            file = f"{entry.channel}/{entry.name}.{lang}.j2"
            path, scan = self._scan(file, entry.name, required_by=None)
            if entry.channel == "email":
                missing = [b for b in EMAIL_BLOCKS if b not in scan.blocks]
                if missing:
                    raise TemplateCatalogInvalid(
                        f"an email template must define blocks subject, text and html; "
                        f"missing {', '.join(missing)}",
                        template=entry.name,
                        path=path,
                        line=None,
                        where=file,
                    )
            references.extend(self._all_references(file, entry.name, set()))
            files[lang], paths[lang] = file, path
            if scan.extends:
                extends.add(lang)
        if entry.purpose != "security":
            for ref in references:
                if ref.name.startswith("secret."):
                    raise TemplateUnknownName(
                        f"{ref.name} is only for security templates (purpose: security)",
                        template=entry.name,
                        path=ref.path,
                        line=ref.line,
                        where=ref.where,
                    )
        phi = check_phi(references, template=entry.name, channel=entry.channel, has_baa=has_baa)
        info = TemplateInfo(
            name=entry.name,
            channel=entry.channel,
            purpose=entry.purpose,
            languages=entry.languages,
            description=entry.description,
            paths=paths,
        )
        return _Loaded(info, frozenset(r.name for r in references), phi, files, frozenset(extends))

    def _all_references(self, file: str, template: str, seen: set[str]) -> list[Reference]:
        if file in seen:
            return []
        seen.add(file)
        _, scan = self._scan(file, template, required_by=None)
        found = list(scan.references)
        for dep in scan.dependencies:
            self._scan(dep, template, required_by=file)
            found.extend(self._all_references(dep, template, seen))
        return found

    def _scan(self, file: str, template: str, *, required_by: str | None) -> tuple[Path, Scan]:
        env = self._text_env
        try:
            source, filename, _ = env.loader.get_source(env, file)  # type: ignore[union-attr]
        except TemplateNotFound:
            where = required_by or "catalog.yaml"
            raise TemplateCatalogInvalid(
                f"{file} does not exist"
                + (" (listed language without a file)" if required_by is None else ""),
                template=template,
                path=None,
                line=None,
                where=where,
            ) from None
        path = Path(filename or file)
        if file in self._scans:
            return path, self._scans[file]
        try:
            ast = env.parse(source, file, filename)
            self._text_env.get_template(file)
            self._html_env.get_template(file)
        except TemplateSyntaxError as exc:
            raise TemplateSyntaxInvalid(
                f"syntax error: {exc.message}",
                template=template,
                path=path,
                line=exc.lineno,
                where=file,
            ) from None
        scan = scan_template(ast, template=template, where=file, path=path)
        self._scans[file] = scan
        return path, scan
