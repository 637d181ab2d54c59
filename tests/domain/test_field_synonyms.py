"""The synonym table beside the field catalog: every name lands on exactly one catalog field."""

from __future__ import annotations

from collections import Counter

import pytest

from telecrm.domain.field_synonyms import SYNONYMS, catalog_field_for, normalise_name
from telecrm.domain.fields import FIELDS


def test_every_synonym_names_a_catalog_field_and_none_is_claimed_twice() -> None:
    assert set(SYNONYMS) <= set(FIELDS)
    names = Counter(normalise_name(s) for names in SYNONYMS.values() for s in names)
    names.update(normalise_name(f) for f in FIELDS)
    assert [n for n, count in names.items() if count > 1] == []


@pytest.mark.parametrize(
    ("name", "fmt", "field", "how"),
    [
        ("birthDate", None, "date_of_birth", "synonym"),
        ("DOB", None, "date_of_birth", "synonym"),
        ("date_of_birth", None, "date_of_birth", "name"),
        ("diagnosis", None, "conditions", "synonym"),
        ("rx", None, "medications", "synonym"),
        ("insuranceId", None, "insurance_member_id", "synonym"),
        ("contactAddress", "email", "email", "format"),
    ],
)
def test_platform_spellings_match_catalog_fields(
    name: str, fmt: str | None, field: str, how: str
) -> None:
    found = catalog_field_for(name, fmt)
    assert found is not None
    assert (found[0].name, found[1]) == (field, how)


def test_a_name_the_table_does_not_know_is_left_for_a_human() -> None:
    assert catalog_field_for("favouriteColour", "date") is None
