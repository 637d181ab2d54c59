"""Synthetic people look like US patients and can never be mistaken for, or reach, real ones."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
import pytest
from phonenumbers import geocoder

from telecrm.simulate.clinical import AREAS
from telecrm.simulate.geography import STATES
from tests.simulate.conftest import Run

# How libphonenumber's geocoder names a state, when not by its full name or "City, ST".
_GEOCODER_NAMES = {"DC": "Washington D.C.", "WA": "Washington State"}


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.code)
def test_every_area_code_belongs_to_its_state_and_zone_exists(state) -> None:
    assert sum(z.share for z in state.zones) == pytest.approx(1.0)
    for zone in state.zones:
        assert zone.timezone in available_timezones()
        for code in zone.area_codes:
            number = phonenumbers.parse(f"+1{code}5550123")
            place = geocoder.description_for_number(number, "en")
            assert place in (state.name, _GEOCODER_NAMES.get(state.code)) or place.endswith(
                f", {state.code}"
            ), f"{code} is in {place!r}, not {state.name}"


def test_all_fifty_states_and_dc_are_covered() -> None:
    assert len({s.code for s in STATES}) == 51


def test_registration_pairs_state_with_its_own_timezone(run: Run) -> None:
    zones = {s.code: {z.timezone for z in s.zones} for s in STATES}
    for e in run.of_type("patient.registered"):
        data = e["data"]
        assert data["timezone"] in zones[data["address"]["state"]]


def test_ages_are_18_to_85_on_the_day_of_registration(run: Run) -> None:
    for e in run.of_type("patient.registered"):
        data = e["data"]
        born = date.fromisoformat(data["date_of_birth"])
        on = datetime.fromisoformat(e["occurred_at"]).astimezone(ZoneInfo(data["timezone"])).date()
        age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
        assert 18 <= age <= 85


def test_most_patients_speak_english_and_some_spanish(run: Run) -> None:
    languages = Counter(e["data"]["language"] for e in run.of_type("patient.registered"))
    share = languages["es"] / sum(languages.values())
    assert set(languages) == {"en", "es"}
    assert 0.04 < share < 0.15


def test_contact_details_cannot_reach_a_real_person(run: Run) -> None:
    fictional_phone = re.compile(r"^\+1\d{3}55501\d{2}$")  # 555-0100..0199 is reserved
    for e in run.of_type("patient.registered"):
        data = e["data"]
        assert fictional_phone.match(data["phone"])
        assert data["email"].rsplit("@", 1)[1] in {"example.com", "example.net", "example.org"}
        if "emergency_contact" in data:
            assert fictional_phone.match(data["emergency_contact"]["phone"])


def test_emails_are_unique_per_patient(run: Run) -> None:
    emails = [e["data"]["email"] for e in run.of_type("patient.registered")]
    assert len(emails) == len(set(emails))


def test_registration_carries_consent_and_preferences(run: Run) -> None:
    registrations = run.of_type("patient.registered")
    prefs = [e["data"]["communication_preferences"] for e in registrations]
    assert all("email_consent" in p and "sms_consent" in p for p in prefs)
    with_contact = sum("emergency_contact" in e["data"] for e in registrations)
    assert 0.5 < with_contact / len(registrations) < 0.7


def test_areas_draw_the_sex_their_conditions_affect(run: Run) -> None:
    for t in run.truth:
        if t["condition_area"] == "erectile_dysfunction":
            assert t["sex"] == "male"
    assert {a.code for a in AREAS} == {t["condition_area"] for t in run.truth}
