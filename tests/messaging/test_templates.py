"""The built-in templates: all 32 load, render in English and Spanish, and use no PHI at all."""

from __future__ import annotations

import pytest

from telecrm.domain.fields import FIELDS
from telecrm.messaging.context import (
    EVENT_VARIABLES,
    SAMPLE_EVENT,
    Brand,
    Links,
    build_event_variables,
    catalog_field_of,
    sample_context,
)
from telecrm.messaging.template_env import money, when
from telecrm.messaging.templates import (
    BUILTIN_DIR,
    MissingSecret,
    TemplateCatalog,
    UnknownTemplate,
)

CATALOG = TemplateCatalog.load()
SMS_BAA_CATALOG = TemplateCatalog.load(sms_baa=True)

PLATFORM_EMAIL = {
    "welcome",
    "consultation_received",
    "treatment_plan_ready",
    "order_confirmation",
    "order_shipped",
    "subscription_started",
    "password_reset",
    "refill_reminder",
    "delivery_notification",
}
PLATFORM_SMS = {
    "welcome",
    "consultation_received",
    "treatment_plan_ready",
    "order_confirmation",
    "order_shipped",
    "delivery_notification",
    "refill_reminder",
    "prescription_expiring",
    "appointment_reminder",
    "payment_failed",
    "subscription_renewal",
    "two_factor_code",
    "password_reset",
}
JOURNEY = {
    ("lead_nurture_1", "email"),
    ("lead_nurture_2", "email"),
    ("lead_nurture_3", "email"),
    ("questionnaire_reminder", "sms"),
    ("consultation_follow_up", "email"),
    ("provider_assigned", "sms"),
    ("renewal_notice", "email"),
    ("win_back", "email"),
    ("upsell_offer", "email"),
    ("satisfaction_survey", "sms"),
}
ALL = [(t.name, t.channel, lang) for t in CATALOG.all() for lang in ("en", "es")]
SAMPLE = sample_context()


def _render(name: str, channel: str, lang: str, ctx: dict) -> str:
    if channel == "email":
        e = CATALOG.render_email(name, lang, ctx)
        return "\n".join((e.subject, e.text, e.html))
    return CATALOG.render_sms(name, lang, ctx).body


def test_the_catalog_holds_the_platform_set_and_the_journey_templates() -> None:
    keys = {(t.name, t.channel) for t in CATALOG.all()}
    expected = {(n, "email") for n in PLATFORM_EMAIL} | {(n, "sms") for n in PLATFORM_SMS} | JOURNEY
    assert expected <= keys  # the 32 of DESIGN §4.4; other parts may add their own
    assert len(expected) == 32
    assert all(t.languages == ("en", "es") for t in CATALOG.all())


def test_purposes_follow_the_design() -> None:
    purposes = {(t.name, t.channel): t.purpose for t in CATALOG.all()}
    security = {k for k, p in purposes.items() if p == "security"}
    marketing = {k for k, p in purposes.items() if p == "marketing"}
    assert security == {
        ("password_reset", "email"),
        ("password_reset", "sms"),
        ("two_factor_code", "sms"),
    }
    assert marketing == {
        ("lead_nurture_1", "email"),
        ("lead_nurture_2", "email"),
        ("lead_nurture_3", "email"),
        ("questionnaire_reminder", "sms"),
        ("win_back", "email"),
        ("upsell_offer", "email"),
    }


@pytest.mark.parametrize(("name", "channel", "lang"), ALL)
def test_every_template_renders_sample_values_without_leftovers(
    name: str, channel: str, lang: str
) -> None:
    out = _render(name, channel, lang, SAMPLE)
    assert out.strip()
    for leftover in ("None", "{{", "}}", "{%", "Undefined"):
        assert leftover not in out


@pytest.mark.parametrize(("name", "channel", "lang"), ALL)
def test_every_template_renders_an_empty_context_except_security_ones_need_their_secret(
    name: str, channel: str, lang: str
) -> None:
    if CATALOG.get(name, channel).purpose == "security":
        with pytest.raises(MissingSecret, match="secret"):
            _render(name, channel, lang, {})
        return
    out = _render(name, channel, lang, {})
    assert "Telecrm Health" in out  # the brand falls back to its defaults
    for leftover in ("None", "{{", "{%", "Undefined"):
        assert leftover not in out


@pytest.mark.parametrize("catalog", [CATALOG, SMS_BAA_CATALOG])
def test_no_default_template_refers_to_a_phi_field(catalog: TemplateCatalog) -> None:
    for t in catalog.all():
        assert catalog.phi_fields(t.name, t.channel) == frozenset()
        for ref in catalog.references(t.name, t.channel):
            field = catalog_field_of(ref)
            assert field is None or not FIELDS[field].is_phi, (t.name, t.channel, ref)


@pytest.mark.parametrize(("name", "channel", "lang"), ALL)
def test_no_rendered_message_carries_a_sample_phi_value(name: str, channel: str, lang: str) -> None:
    out = _render(name, channel, lang, SAMPLE)
    for phi_value in ("Sample medication", "Sample condition", "rx_77", "prov_17", "2026-03-20"):
        assert phi_value not in out


def test_references_name_exactly_what_a_template_needs() -> None:
    refs = CATALOG.references("order_confirmation", "sms")
    assert refs == {
        "brand.name",
        "patient.first_name",
        "event.order_id",
        "event.amount",
        "event.currency",
        "links.order",
    }
    assert "secret.code" in CATALOG.references("two_factor_code", "sms")
    # an email's references include its layout's (brand footer) and its marketing footer's
    email_refs = CATALOG.references("win_back", "email")
    assert {"brand.address", "links.unsubscribe", "links.preferences"} <= email_refs


@pytest.mark.parametrize("name", sorted(t.name for t in CATALOG.all() if t.channel == "email"))
@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_email_has_subject_text_and_small_html(name: str, lang: str) -> None:
    email = CATALOG.render_email(name, lang, SAMPLE)
    assert email.subject and "\n" not in email.subject
    assert email.text
    assert email.html.startswith("<!doctype html>") and email.html.endswith("</html>")
    assert len(email.html.encode()) < 8 * 1024
    assert "100 Example Street" in email.html  # brand.address in the footer
    assert email.language == lang


@pytest.mark.parametrize("name", sorted(t.name for t in CATALOG.all() if t.purpose == "marketing"))
@pytest.mark.parametrize("lang", ["en", "es"])
def test_marketing_messages_say_how_to_opt_out(name: str, lang: str) -> None:
    channel = CATALOG.get(name, "email").channel if ("email" in _channels(name)) else "sms"
    if channel == "email":
        email = CATALOG.render_email(name, lang, SAMPLE)
        unsubscribe = SAMPLE["links"]["unsubscribe"]
        assert unsubscribe.replace("&", "&amp;") in email.html and unsubscribe in email.text
    else:
        body = CATALOG.render_sms(name, lang, SAMPLE).body
        assert body.endswith(
            "Reply STOP to opt out." if lang == "en" else "Responde STOP para darte de baja."
        )


def _channels(name: str) -> set[str]:
    return {t.channel for t in CATALOG.all() if t.name == name}


@pytest.mark.parametrize(
    ("name", "lang"),
    [(t.name, lang) for t in CATALOG.all() if t.channel == "sms" for lang in ("en", "es")],
)
def test_every_sms_names_the_brand_first_and_is_one_line(name: str, lang: str) -> None:
    ctx = {**SAMPLE, "brand": Brand(name="Acme Care")}
    body = CATALOG.render_sms(name, lang, ctx).body
    assert body.startswith("Acme Care: ")
    assert "\n" not in body and "  " not in body


@pytest.mark.parametrize("lang", ["en", "es"])
def test_the_first_sms_offers_help_and_stop(lang: str) -> None:
    body = CATALOG.render_sms("welcome", lang, SAMPLE).body
    assert "HELP" in body
    assert ("Reply STOP to opt out" if lang == "en" else "Responde STOP para darte de baja") in body


@pytest.mark.parametrize("name", ["welcome", "order_confirmation"])
def test_transactional_sms_fit_one_gsm7_segment_with_typical_values(name: str) -> None:
    sms = CATALOG.render_sms(name, "en", SAMPLE)
    assert sms.segments.encoding == "GSM-7"
    assert sms.segments.segments == 1


def test_most_transactional_sms_fit_one_segment_in_both_languages() -> None:
    over = [
        (t.name, lang)
        for t in CATALOG.all()
        if t.channel == "sms" and t.purpose != "marketing"
        for lang in ("en", "es")
        if CATALOG.render_sms(t.name, lang, SAMPLE).segments.segments > 1
    ]
    assert set(over) <= {("welcome", "es"), ("satisfaction_survey", "es")}


def test_survey_asks_for_a_number_from_0_to_10() -> None:
    assert (
        "Reply with a number from 0 to 10"
        in CATALOG.render_sms("satisfaction_survey", "en", SAMPLE).body
    )
    assert "del 0 al 10" in CATALOG.render_sms("satisfaction_survey", "es", SAMPLE).body


@pytest.mark.parametrize(
    ("asked", "picked"),
    [
        ("es-MX", "es"),
        ("es", "es"),
        ("ES_us", "es"),
        ("en-GB", "en"),
        ("fr", "en"),
        (None, "en"),
        ("", "en"),
    ],
)
def test_pick_language_falls_back_to_english(asked: str | None, picked: str) -> None:
    assert CATALOG.pick_language("welcome", "email", asked) == picked


def test_render_accepts_a_regional_language_and_reports_the_one_used() -> None:
    assert CATALOG.render_sms("welcome", "es-MX", SAMPLE).language == "es"
    assert CATALOG.render_email("welcome", "de", SAMPLE).language == "en"


def test_unknown_template_is_a_lookup_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownTemplate, match=r"known: .*order_confirmation"):
        CATALOG.get("order_confirmed", "sms")
    with pytest.raises(UnknownTemplate):
        CATALOG.render_email("two_factor_code", "en", SAMPLE)  # an SMS-only template


def test_none_values_render_as_the_default_never_as_none() -> None:
    ctx = {**SAMPLE, "patient": {"first_name": None}, "event": {"order_id": None, "amount": None}}
    email = CATALOG.render_email("order_confirmation", "en", ctx)
    assert email.text.startswith("Hi there,")
    assert "None" not in email.html + email.text + email.subject
    assert CATALOG.render_sms("order_confirmation", "en", ctx).body.startswith(
        "Telecrm Health: Thanks! Your order is confirmed. Details:"
    )


def test_html_is_escaped_and_text_is_not() -> None:
    ctx = {**SAMPLE, "patient": {"first_name": "<b>Ana & Co</b>"}}
    email = CATALOG.render_email("welcome", "en", ctx)
    assert "&lt;b&gt;Ana &amp; Co&lt;/b&gt;" in email.html and "<b>Ana" not in email.html
    assert email.text.startswith("Hi <b>Ana & Co</b>,")


def test_a_template_sees_only_what_it_refers_to() -> None:
    # the sample context carries every field, PHI included; none of it reaches the output
    email = CATALOG.render_email("refill_reminder", "en", SAMPLE)
    assert "ana.rivera@example.com" not in email.html + email.text


def test_security_templates_carry_the_secret_they_are_given() -> None:
    ctx = {**SAMPLE, "secret": {"code": "777111"}}
    assert (
        "777111 is your verification code" in CATALOG.render_sms("two_factor_code", "en", ctx).body
    )
    with pytest.raises(MissingSecret, match=r"secret\.reset_url"):
        CATALOG.render_sms("password_reset", "en", {**SAMPLE, "secret": {"code": "1"}})


def test_appointment_times_are_shown_in_the_patients_timezone() -> None:
    body = CATALOG.render_sms("appointment_reminder", "en", SAMPLE).body
    assert "Thu, Mar 5, 10:30 AM CST" in body
    es = CATALOG.render_sms("appointment_reminder", "es", SAMPLE).body
    assert "jue 5 mar, 10:30 CST" in es


def test_filters_format_missing_values_as_nothing() -> None:
    assert money(49) == "$49.00" and money(1234.5, "EUR") == "1,234.50 EUR"
    assert money(None) == "" and money("abc") == ""
    assert when(None) == "" and when("not a date") == ""
    assert when("2026-03-05T16:30:00+00:00") == "Thu, Mar 5, 4:30 PM UTC"
    assert when("2026-03-05", "es", time=False) == "jue 5 mar"
    assert when("2026-03-05T16:30:00+00:00", "en", "Not/AZone") == "Thu, Mar 5, 4:30 PM UTC"
    assert when("2026-03-05T16:30:00+00:00", "en", "America") == "Thu, Mar 5, 4:30 PM UTC"


def test_links_point_at_the_platform_and_never_carry_a_prescription_id() -> None:
    links = Links("https://portal.example.com/").for_message(
        "msg 1", {"order_id": "ord/1", "prescription_id": "rx_77", "consultation_id": "con_5"}
    )
    assert links["order"] == "https://portal.example.com/orders/ord%2F1"
    assert links["consultation"] == "https://portal.example.com/consultations/con_5"
    assert links["refill"] == "https://portal.example.com/refills"
    assert all("rx_77" not in url for url in links.values())
    assert (
        links["unsubscribe"] == "https://portal.example.com/account/preferences?unsubscribe=msg+1"
    )
    assert "reset" not in links
    custom = Links("https://p.example", preferences_url="https://p.example/prefs?x=1")
    with_reset = custom.for_message("m1", reset_url="https://p.example/reset/abc")
    assert with_reset["unsubscribe"] == "https://p.example/prefs?x=1&unsubscribe=m1"
    assert with_reset["reset"] == "https://p.example/reset/abc"
    with pytest.raises(ValueError, match="http"):
        Links("javascript:alert(1)")


def test_event_variables_are_declared_against_catalog_fields() -> None:
    assert set(EVENT_VARIABLES.values()) <= set(FIELDS)
    assert set(SAMPLE_EVENT) == set(EVENT_VARIABLES)
    assert FIELDS[EVENT_VARIABLES["medication"]].is_phi
    assert not FIELDS[EVENT_VARIABLES["amount"]].is_phi


def test_build_event_variables_keeps_only_declared_names() -> None:
    order = {
        "order_id": "ord_1",
        "amount": 49.0,
        "currency": "USD",
        "recurring": False,
        "payment_method": {"brand": "visa", "last4": "4242"},
    }
    assert build_event_variables("order.paid", order) == {
        "order_id": "ord_1",
        "amount": 49.0,
        "currency": "USD",
    }
    plan = {"treatment_plan_id": "tp_1", "status": "created", "outcome": "better"}
    assert build_event_variables("treatment_plan.updated", plan) == {"treatment_status": "created"}
    assert build_event_variables("refill.due", {"prescription_id": "rx", "due_on": None}) == {
        "prescription_id": "rx"
    }


def test_templates_ship_inside_the_package() -> None:
    assert (BUILTIN_DIR / "catalog.yaml").is_file()
    for t in CATALOG.all():
        for lang, path in t.paths.items():
            assert path.is_file() and path.name == f"{t.name}.{lang}.j2"
            assert BUILTIN_DIR in path.parents
