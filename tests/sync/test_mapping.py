"""Mapping files: the defaults load, and every kind of mistake is refused naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecrm.domain.fields import FIELDS, phi_fields
from telecrm.sync.mapping import MappingError, PhiDisclosureRefused, load_mapping

HEADER = """\
version: 1
destination: acme
connector: hubspot
baa: {baa}
limits: {{requests: 100, per_seconds: 10}}
custom_properties:
  - {{crm_object: contacts, name: telecrm_patient_id, label: Patient ID, kind: string, unique: true}}
  - {{crm_object: contacts, name: telecrm_score, label: Score, kind: number}}
  - {{crm_object: contacts, name: telecrm_conditions, label: Conditions, kind: string, sensitive: {sensitive}}}
objects:
  - name: contact
    crm_object: contacts
    id_property: telecrm_patient_id
    properties:
      telecrm_patient_id: {{from: patient_id}}
"""


def mapping_text(extra: str, *, baa: str = "false", sensitive: str = "false") -> str:
    return HEADER.format(baa=baa, sensitive=sensitive) + extra


def refused(text: str) -> MappingError:
    with pytest.raises(MappingError) as info:
        load_mapping("acme.yaml", text=text)
    return info.value


@pytest.mark.parametrize("name", ["hubspot", "salesforce"])
def test_the_built_in_mappings_load_and_send_no_phi(name: str) -> None:
    m = load_mapping(name)
    assert m.baa is False
    assert m.phi_fields() == frozenset()
    assert any(c.unique for c in m.custom_properties)


def test_a_phi_field_for_a_destination_without_a_baa_is_refused_naming_line_and_field() -> None:
    error = refused(
        mapping_text("      telecrm_conditions: {field: conditions, transform: join}\n")
    )
    assert isinstance(error, PhiDisclosureRefused)
    assert error.line == 16
    assert error.where == "objects[0].properties.telecrm_conditions.field"
    assert "'conditions' is PHI (medical_history)" in str(error)
    assert "baa: false" in str(error)


def test_hubspot_under_a_baa_still_needs_a_sensitive_property_for_phi() -> None:
    text = "      telecrm_conditions: {field: conditions, transform: join}\n"
    error = refused(mapping_text(text, baa="true"))
    assert isinstance(error, PhiDisclosureRefused)
    assert "created as sensitive" in str(error)
    ok = load_mapping("acme.yaml", text=mapping_text(text, baa="true", sensitive="true"))
    assert ok.phi_fields() == {"conditions"}


def test_unknown_catalog_field_is_refused() -> None:
    error = refused(mapping_text("      email: {field: e_mail}\n"))
    assert error.line == 16 and "'e_mail' is not in the field catalog" in str(error)


def test_unknown_attribute_names_what_is_known() -> None:
    error = refused(mapping_text("      telecrm_score: {from: score}\n"))
    assert "'score' is not an attribute of a patient record" in str(error)
    assert "churn_risk" in str(error)


def test_type_mismatches_are_refused() -> None:
    money_of_text = refused(mapping_text("      telecrm_score: {field: email, transform: money}\n"))
    assert "transform 'money' cannot take a str value" in str(money_of_text)
    text_into_number = refused(mapping_text("      telecrm_score: {field: city}\n"))
    assert "a str value cannot go into number property 'telecrm_score'" in str(text_into_number)
    list_into_one = refused(mapping_text("      hs_features: {field: features_used}\n"))
    assert "transform: join" in str(list_into_one)


def test_exactly_one_source_per_property() -> None:
    error = refused(mapping_text("      firstname: {field: first_name, value: x}\n"))
    assert "exactly one of" in str(error) and error.line == 16


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nobjects: [\n  - a: b\n")
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert str(path) in str(info.value) and "not valid YAML" in str(info.value)


@pytest.mark.parametrize("tagged", ["!", "!!python/object:os.system x", "!!binary zz"])
def test_a_tag_the_safe_loader_refuses_is_a_yaml_error_with_its_line(
    tmp_path: Path, tagged: str
) -> None:
    path = tmp_path / "tagged.yaml"
    path.write_text(f"version: 1\ndestination: {tagged}\n")
    with pytest.raises(MappingError) as info:  # was a raw yaml ConstructorError (a traceback)
        load_mapping(path)
    assert "not valid YAML" in str(info.value) and info.value.line == 2


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read the file"):
        load_mapping(tmp_path / "nope.yaml")


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(FIELDS)), baa=st.booleans())
def test_any_catalog_field_is_accepted_or_refused_exactly_by_the_phi_rule(
    name: str, baa: bool
) -> None:
    kind = FIELDS[name].kind
    transform = {"list": ", transform: join", "object": ", transform: join"}.get(kind, "")
    target = "telecrm_conditions"  # a string property, sensitive under the BAA
    text = mapping_text(
        f"      {target}: {{field: {name}{transform}}}\n",
        baa=str(baa).lower(),
        sensitive="true",
    )
    if kind in ("int", "float", "bool", "object"):
        with pytest.raises(MappingError):
            load_mapping("acme.yaml", text=text)
        return
    if name in phi_fields() and not baa:
        with pytest.raises(PhiDisclosureRefused):
            load_mapping("acme.yaml", text=text)
    else:
        assert load_mapping("acme.yaml", text=text).destination == "acme"


DYNAMICS = """\
version: 1
destination: d365
connector: {connector}
baa: {baa}
limits: {{requests: 100, per_seconds: 300}}
custom_properties:
  - {{crm_object: contacts, name: telecrm_patientid, label: Patient ID, kind: string, unique: true}}
  - {{crm_object: telecrm_prescriptions, name: telecrm_externalid, label: Rx ID, kind: string, unique: {unique}}}
custom_tables:
  - schema_name: telecrm_prescription
    label: Prescription
    plural_label: Prescriptions
    primary_name: {primary}
    contact_lookup: telecrm_contactid
objects:
  - name: contact
    crm_object: contacts
    id_property: telecrm_patientid
    properties:
      telecrm_patientid: {{from: patient_id}}
  - name: prescription
    crm_object: telecrm_prescriptions
    source: prescription
    id_property: telecrm_externalid
    properties:
      telecrm_externalid: {{from: record_id}}
      telecrm_contactid: {{relation: contact}}
"""


def dynamics_text(**overrides: str) -> str:
    values = {"connector": "dynamics", "baa": "false", "unique": "true", "primary": "telecrm_name"}
    return DYNAMICS.format(**(values | overrides))


def test_a_source_that_reveals_phi_is_refused_without_a_baa_naming_line_and_field() -> None:
    error = refused(dynamics_text())
    assert isinstance(error, PhiDisclosureRefused)
    assert (error.line, error.where) == (23, "objects[1].source")
    assert "a prescription record reveals 'medications', which is PHI (medications)" in str(error)
    assert load_mapping("acme.yaml", text=dynamics_text(baa="true")).phi_fields() == {"medications"}


@pytest.mark.parametrize(
    ("source", "field"),
    [("treatment_plan", "treatment_status"), ("provider_relationship", "provider_id")],
)
def test_every_phi_bearing_source_asks_the_catalog(source: str, field: str) -> None:
    text = dynamics_text().replace("source: prescription", f"source: {source}")
    error = refused(text)
    assert isinstance(error, PhiDisclosureRefused) and FIELDS[field].is_phi
    assert f"reveals {field!r}" in str(error)


def test_phi_free_sources_of_custom_tables_load_without_a_baa() -> None:
    text = dynamics_text().replace("source: prescription", "source: subscription")
    assert load_mapping("acme.yaml", text=text).phi_fields() == frozenset()


def test_a_treatment_plan_status_counts_as_the_phi_it_reveals() -> None:
    text = dynamics_text(baa="true").replace("source: prescription", "source: treatment_plan")
    text += "      telecrm_name: {template: 'Plan {record_id} ({status})'}\n"
    m = load_mapping("acme.yaml", text=text)
    assert m.phi_fields() == {"treatment_status"}


@pytest.mark.parametrize(
    ("overrides", "line", "where", "problem"),
    [
        ({"connector": "salesforce"}, 10, "custom_tables[0]", "only in Dataverse"),
        ({"unique": "false"}, 10, "custom_tables[0].schema_name", "exactly one custom property"),
        ({"primary": "acme_name"}, 13, "custom_tables[0].primary_name", "prefix 'telecrm_'"),
        ({"primary": "Name"}, 13, "custom_tables[0].primary_name", "should match pattern"),
    ],
)
def test_custom_table_mistakes_name_file_line_and_field(
    overrides: dict[str, str], line: int, where: str, problem: str
) -> None:
    error = refused(dynamics_text(baa="true", **overrides))
    assert (error.line, error.where) == (line, where), str(error)
    assert problem in str(error) and str(error).startswith(f"acme.yaml:{line}: ")


def test_an_object_of_a_custom_table_keys_on_its_alternate_key() -> None:
    text = dynamics_text(baa="true").replace(
        "    id_property: telecrm_externalid\n", "    id_property: telecrm_name\n"
    )
    text += "      telecrm_name: {template: 'Rx {record_id}'}\n"
    error = refused(text)
    assert error.where == "objects[1].id_property" and "alternate key" in str(error)


def test_the_built_in_dynamics_mappings_split_at_the_baa() -> None:
    plain, covered = load_mapping("dynamics"), load_mapping("dynamics-baa")
    assert (plain.baa, covered.baa) == (False, True)
    assert plain.phi_fields() == frozenset()
    assert {t.schema_name for t in plain.custom_tables} == {
        "telecrm_consultation",
        "telecrm_subscription",
    }
    assert len(covered.custom_tables) == 5 and plain.destination == covered.destination
    assert {"medications", "provider_id", "treatment_status"} <= covered.phi_fields()
