"""The template lint: PHI refused on channels without a BAA, unknown names refused, each error
naming the file, the line and the field."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telecrm.domain.fields import FIELDS
from telecrm.messaging.context import EVENT_VARIABLES
from telecrm.messaging.templates import (
    TemplateCatalog,
    TemplateCatalogInvalid,
    TemplateError,
    TemplateRefused,
    TemplateSyntaxInvalid,
    TemplateUnknownName,
)


def email_source(body: str) -> str:
    """An email template whose html block's third line is `body`."""
    return (
        "{% block subject %}Hello{% endblock %}\n"
        "{% block text %}Hi{% endblock %}\n"
        "{% block html %}<p>\n"
        f"{body}\n"
        "</p>{% endblock %}\n"
    )


def override(
    folder: Path,
    channel: str,
    source: str,
    *,
    name: str = "custom",
    purpose: str = "transactional",
    languages: tuple[str, ...] = ("en",),
    listed: bool = True,
) -> Path:
    (folder / channel).mkdir(parents=True, exist_ok=True)
    for lang in languages:
        (folder / channel / f"{name}.{lang}.j2").write_text(source)
    if listed:
        (folder / "catalog.yaml").write_text(
            "templates:\n"
            f"  - name: {name}\n"
            f"    channel: {channel}\n"
            f"    purpose: {purpose}\n"
            "    description: A test template\n"
            f"    languages: [{', '.join(languages)}]\n"
        )
    return folder


def sms_with(line3: str) -> str:
    return "{{ brand.name }}:\nHello\n" + line3 + "\n"


def test_phi_in_an_email_is_refused_naming_file_line_and_field(tmp_path: Path) -> None:
    folder = override(tmp_path, "email", email_source("{{ patient.medications }}"))
    with pytest.raises(TemplateRefused) as caught:
        TemplateCatalog.load(override_dir=folder)
    err = caught.value
    assert str(err).startswith("email/custom.en.j2 line 4: refers to patient.medications")
    assert "PHI (medications)" in str(err) and "channel email has no BAA" in str(err)
    assert (err.template, err.line) == ("custom", 4)
    assert err.path == folder / "email" / "custom.en.j2"
    assert isinstance(err, TemplateError) and isinstance(err, ValueError)


def test_email_never_has_a_baa_even_when_sms_does(tmp_path: Path) -> None:
    folder = override(tmp_path, "email", email_source("{{ patient.conditions }}"))
    with pytest.raises(TemplateRefused, match="SendGrid email never carries PHI"):
        TemplateCatalog.load(sms_baa=True, override_dir=folder)


def test_phi_in_sms_is_refused_without_a_baa_and_accepted_with_one(tmp_path: Path) -> None:
    folder = override(tmp_path, "sms", sms_with("{{ patient.medications | join(', ') }}"))
    with pytest.raises(TemplateRefused) as caught:
        TemplateCatalog.load(override_dir=folder)
    assert str(caught.value) == (
        "sms/custom.en.j2 line 3: refers to patient.medications, which is PHI (medications); "
        "channel sms has no BAA (set TELECRM_TWILIO_BAA=true only if Twilio signed one)"
    )
    catalog = TemplateCatalog.load(sms_baa=True, override_dir=folder)
    assert catalog.phi_fields("custom", "sms") == {"medications"}
    body = catalog.render_sms("custom", "en", {"patient": {"medications": ["A", "B"]}}).body
    assert body == "Telecrm Health: Hello A, B"


def test_an_event_variable_is_classified_through_the_field_it_discloses(tmp_path: Path) -> None:
    email = override(tmp_path / "e", "email", email_source("{{ event.medication }}"))
    with pytest.raises(
        TemplateRefused,
        match=r"line 4: refers to event\.medication, which discloses medications, PHI",
    ):
        TemplateCatalog.load(override_dir=email)
    sms = override(tmp_path / "s", "sms", sms_with("{{ event.due_on }}"))
    with pytest.raises(TemplateRefused, match=r"event\.due_on"):
        TemplateCatalog.load(override_dir=sms)
    assert TemplateCatalog.load(sms_baa=True, override_dir=sms).phi_fields("custom", "sms") == {
        "medications"
    }


def test_an_override_replaces_a_builtin_and_is_linted_like_one(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "welcome.en.j2").write_text(
        "{{ brand.name }}: Hola {{ patient.first_name }}\n"
    )
    catalog = TemplateCatalog.load(override_dir=tmp_path)
    assert catalog.render_sms("welcome", "en", {"patient": {"first_name": "Ana"}}).body == (
        "Telecrm Health: Hola Ana"
    )
    assert len(catalog.all()) == len(TemplateCatalog.load().all())
    (tmp_path / "sms" / "welcome.es.j2").write_text("{{ brand.name }}\n{{ patient.conditions }}\n")
    with pytest.raises(
        TemplateRefused, match=r"^sms/welcome\.es\.j2 line 2: .*patient\.conditions"
    ):
        TemplateCatalog.load(override_dir=tmp_path)


def test_phi_in_a_shared_layout_is_refused_naming_the_layout(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    builtin = Path(TemplateCatalog.load().get("welcome", "email").paths["en"]).parent
    layout = (
        (builtin / "_parts.en.j2")
        .read_text()
        .replace("{{ brand.name }} · {{ brand.address }}", "{{ patient.allergies }}")
    )
    (tmp_path / "email" / "_parts.en.j2").write_text(layout)
    with pytest.raises(
        TemplateRefused, match=r"^email/_parts\.en\.j2 line \d+: refers to patient\.allergies"
    ):
        TemplateCatalog.load(override_dir=tmp_path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{{ patient.shoe_size }}", "the field catalog has no field 'shoe_size'"),
        ("{{ event.diagnosis }}", "no such event variable"),
        ("{{ links.admin }}", "links has only"),
        ("{{ patient[field] }}", "patient must be used as patient.<name>"),
        ("{{ patient }}", "patient must be used as patient.<name>"),
        ("{{ patient | attr('medications') }}", "patient must be used"),
        ("{% for k in patient %}{{ k }}{% endfor %}", "patient must be used"),
        ("{{ config.SECRET_KEY }}", "config is not in the template vocabulary"),
        ("{{ first_name }}", "first_name is not in the template vocabulary"),
        ("{% set patient = {} %}", "rebinds patient"),
        ("{{ secret.code }}", "secret.code is only for security templates"),
        ("{% include links.portal %}", "chosen at render time"),
    ],
)
def test_names_outside_the_vocabulary_are_refused_with_their_line(
    tmp_path: Path, line: str, message: str
) -> None:
    folder = override(tmp_path, "sms", sms_with(line))
    with pytest.raises(TemplateUnknownName) as caught:
        TemplateCatalog.load(override_dir=folder)
    assert message in str(caught.value)
    assert str(caught.value).startswith("sms/custom.en.j2 line 3: ")
    assert caught.value.line == 3


def test_a_constant_subscript_is_the_same_as_an_attribute(tmp_path: Path) -> None:
    folder = override(tmp_path, "sms", sms_with("{{ patient['first_name'] }}"))
    catalog = TemplateCatalog.load(override_dir=folder)
    assert "patient.first_name" in catalog.references("custom", "sms")
    refused = override(tmp_path / "x", "sms", sms_with("{{ patient['insurance_member_id'] }}"))
    with pytest.raises(TemplateRefused, match="insurance_member_id"):
        TemplateCatalog.load(override_dir=refused)


def test_loop_variables_and_macro_parameters_are_allowed(tmp_path: Path) -> None:
    source = (
        "{% macro greet(who) %}Hi {{ who }}{% endmacro %}{{ brand.name }}: "
        "{{ greet(patient.first_name) }}{% for f in patient.features_used %} {{ f }}{% endfor %}\n"
    )
    catalog = TemplateCatalog.load(override_dir=override(tmp_path, "sms", source))
    body = catalog.render_sms(
        "custom", "en", {"patient": {"first_name": "Ana", "features_used": ["a"]}}
    ).body
    assert body == "Telecrm Health: Hi Ana a"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{{ patient.first_name ", "syntax error"),
        ("{% if patient.first_name %}", "syntax error"),
        ("{{ patient.first_name | no_such_filter }}", "no_such_filter"),
    ],
)
def test_syntax_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    folder = override(tmp_path, "sms", sms_with(line))
    with pytest.raises(TemplateSyntaxInvalid) as caught:
        TemplateCatalog.load(override_dir=folder)
    assert message in str(caught.value)
    assert str(caught.value).startswith("sms/custom.en.j2 line ")
    assert caught.value.line is not None and caught.value.line >= 3


def test_a_listed_language_without_a_file_is_a_catalog_error(tmp_path: Path) -> None:
    folder = override(tmp_path, "sms", sms_with("x"), languages=("en",))
    (folder / "catalog.yaml").write_text(
        (folder / "catalog.yaml").read_text().replace("[en]", "[en, es]")
    )
    with pytest.raises(TemplateCatalogInvalid, match=r"sms/custom\.es\.j2 does not exist"):
        TemplateCatalog.load(override_dir=folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[en]", "[es]"), "needs an English (en) version"),
        (("purpose: transactional", "purpose: promotional"), "purpose"),
        (("channel: sms", "channel: fax"), "channel"),
        (("    description: A test template\n", ""), "description"),
    ],
)
def test_catalog_entries_are_validated_with_their_line(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    folder = override(tmp_path, "sms", sms_with("x"), languages=("en", "es"))
    catalog_yaml = folder / "catalog.yaml"
    old = catalog_yaml.read_text().replace("[en, es]", "[en]")
    catalog_yaml.write_text(old.replace(*change))
    with pytest.raises(TemplateCatalogInvalid) as caught:
        TemplateCatalog.load(override_dir=folder)
    assert message in str(caught.value)
    assert caught.value.line == 2
    assert str(catalog_yaml) in str(caught.value)


def test_an_unlisted_override_file_is_refused_not_ignored(tmp_path: Path) -> None:
    folder = override(tmp_path, "sms", sms_with("x"), name="welcom", listed=False)
    with pytest.raises(
        TemplateCatalogInvalid, match=r"^sms/welcom\.en\.j2: is not listed in catalog\.yaml"
    ):
        TemplateCatalog.load(override_dir=folder)


def test_an_email_needs_subject_text_and_html_blocks(tmp_path: Path) -> None:
    folder = override(tmp_path, "email", "{% block subject %}Hi{% endblock %}\n")
    with pytest.raises(TemplateCatalogInvalid, match="missing text, html"):
        TemplateCatalog.load(override_dir=folder)


def test_an_override_may_add_a_language_to_a_builtin(tmp_path: Path) -> None:
    folder = override(
        tmp_path, "sms", "{{ brand.name }}: Bonjour\n", name="welcome", languages=("en", "fr")
    )
    catalog = TemplateCatalog.load(override_dir=folder)
    assert catalog.get("welcome", "sms").languages == ("en", "fr")
    assert catalog.render_sms("welcome", "fr-CA", {}).body == "Telecrm Health: Bonjour"


REFERENCES = sorted(
    [f"patient.{name}" for name in FIELDS] + [f"event.{name}" for name in EVENT_VARIABLES]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reference=st.sampled_from(REFERENCES),
    channel=st.sampled_from(["email", "sms"]),
    sms_baa=st.booleans(),
    subscript=st.booleans(),
)
def test_a_template_is_refused_iff_it_uses_phi_on_a_channel_without_a_baa(
    reference: str, channel: str, sms_baa: bool, subscript: bool
) -> None:
    namespace, _, name = reference.partition(".")
    expr = f"{namespace}[{name!r}]" if subscript else reference
    field = FIELDS[name] if namespace == "patient" else FIELDS[EVENT_VARIABLES[name]]
    line = "{{ " + expr + " }}"
    source = email_source(line) if channel == "email" else sms_with(line)
    with tempfile.TemporaryDirectory() as tmp:
        folder = override(Path(tmp), channel, source)
        refused = field.is_phi and not (channel == "sms" and sms_baa)
        if refused:
            with pytest.raises(TemplateRefused) as caught:
                TemplateCatalog.load(sms_baa=sms_baa, override_dir=folder)
            assert reference in str(caught.value) and field.name in str(caught.value)
            assert caught.value.line == (4 if channel == "email" else 3)
        else:
            catalog = TemplateCatalog.load(sms_baa=sms_baa, override_dir=folder)
            assert reference in catalog.references("custom", channel)
            expected = {field.name} if field.is_phi else set()
            assert catalog.phi_fields("custom", channel) == expected


def test_a_missing_override_folder_is_an_error_not_silence(tmp_path: Path) -> None:
    with pytest.raises(TemplateCatalogInvalid, match="override folder does not exist"):
        TemplateCatalog.load(override_dir=tmp_path / "nope")
