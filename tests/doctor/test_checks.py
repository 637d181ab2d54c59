"""The doctor's checks of keys, secrets, secret files, destinations and providers, one by one:
each one's ok / warn / fail, and never the value it looked at in what it says."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import SecretStr

from telecrm.doctor.destination_checks import check_destinations, check_messaging, load_mappings
from telecrm.doctor.findings import Finding
from telecrm.doctor.key_checks import (
    check_master_key,
    check_previous_keys,
    check_public_url,
    check_webhook_secrets,
)
from telecrm.doctor.secret_file_checks import SecretNames, check_secret_files
from telecrm.ingest.signatures import generate_secret
from telecrm.security.keyring import generate_master_key
from telecrm.sync.mapping import BUILTIN_DIR, load_mapping
from tests.doctor.helpers import (
    CANARY,
    clean_environment,
    context,
    only,
    said,
    secret_file,
    settings_for,
)
from tests.support.builders import MASTER_KEY as PATTERNED_TEST_KEY


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


# -- keys and secrets ------------------------------------------------------------------------------

B64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731


@pytest.mark.parametrize(
    ("key", "status", "phrase"),
    [
        (None, "fail", "is not set"),
        ("not base64 at all!", "fail", "not base64"),
        (B64(secrets.token_bytes(16)), "fail", "16 bytes, not 32"),
        (PATTERNED_TEST_KEY, "fail", "repeats a 8-byte pattern"),
        (B64(bytes(32)), "fail", "every byte is the same"),
        (B64(bytes(range(32))), "fail", "count up or down"),
        (generate_master_key(), "ok", "32 bytes that look random"),
    ],
    ids=["missing", "not-base64", "short", "patterned", "zeros", "counting", "random"],
)
def test_the_master_key_must_be_present_well_formed_and_random(
    tmp_path: Path, key: str | None, status: str, phrase: str
) -> None:
    settings = settings_for(tmp_path, master_key=SecretStr(key) if key else None)
    finding = only(check_master_key(context(settings)))
    assert (finding.status, phrase in finding.message) == (status, True), finding
    assert not key or key not in said([finding])


def test_the_demo_s_key_is_refused_outside_the_demo(tmp_path: Path) -> None:
    demo = generate_master_key()
    (tmp_path / "demo-master.key").write_text(demo + "\n")
    finding = only(check_master_key(context(settings_for(tmp_path, master_key=SecretStr(demo)))))
    assert finding.status == "fail" and "the demo's key" in finding.message
    assert demo not in said([finding])
    other = settings_for(tmp_path)  # the demo file is there, but the key in use is another
    assert only(check_master_key(context(other))).status == "ok"


def test_previous_master_keys_are_checked_entry_by_entry(tmp_path: Path) -> None:
    current, old = generate_master_key(), generate_master_key()
    check = lambda previous: check_previous_keys(  # noqa: E731
        context(
            settings_for(
                tmp_path,
                master_key=SecretStr(current),
                previous_master_keys=[SecretStr(p) for p in previous],
            )
        )
    )
    assert only(check([])).status == "skip"
    assert only(check([old])).status == "ok"
    bad = only(check([old, CANARY]))
    assert (bad.status, "entry 2" in bad.message, CANARY in said([bad])) == ("fail", True, False)
    same = only(check([current]))
    assert (same.status, "is the current master key" in same.message) == ("warn", True)


SPEC_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    ("secret", "status", "phrase"),
    [
        (None, "warn", "refuses every request"),
        (SPEC_EXAMPLE, "fail", "printed in the Standard Webhooks spec"),
        ("whsec_" + CANARY + "!", "fail", "not valid base64"),
        ("whsec_" + B64(secrets.token_bytes(8)), "fail", "shorter than 16 bytes"),
        ("whsec_" + B64(secrets.token_bytes(16)), "warn", "16 bytes; Standard Webhooks"),
        ("whsec_" + B64(secrets.token_bytes(80)), "warn", "80 bytes; Standard Webhooks"),
        ("whsec_" + B64(bytes([7]) * 32), "fail", "every byte is the same"),
        (B64(secrets.token_bytes(32)), "warn", "lacks the whsec_ prefix"),
        (generate_secret(), "ok", "well-formed random secret"),
    ],
    ids=["none", "spec", "not-b64", "tiny", "short", "long", "same", "no-prefix", "random"],
)
def test_webhook_secrets_must_be_standard_webhooks_secrets(
    tmp_path: Path, secret: str | None, status: str, phrase: str
) -> None:
    settings = settings_for(tmp_path, webhook_secrets=[SecretStr(secret)] if secret else [])
    finding = only(check_webhook_secrets(context(settings)))
    assert (finding.status, phrase in finding.message) == (status, True), finding
    assert not secret or secret.removeprefix("whsec_") not in said([finding])


@pytest.mark.parametrize(
    ("url", "providers", "status"),
    [
        ("https://crm.example.com", True, "ok"),
        ("http://127.0.0.1:8000", False, "ok"),
        ("http://[::1]:8000", False, "ok"),
        ("http://localhost:8000", True, "warn"),
        ("http://crm.example.com", False, "fail"),
        ("crm.example.com", False, "fail"),
    ],
)
def test_the_public_url_is_https_outside_loopback(
    tmp_path: Path, url: str, providers: bool, status: str
) -> None:
    settings = settings_for(tmp_path, public_url=url)
    assert only(check_public_url(context(settings), providers=providers)).status == status


# -- secret files --------------------------------------------------------------------------------


NAMES = SecretNames.gather([load_mapping(p) for p in sorted(BUILTIN_DIR.glob("*.yaml"))])


@pytest.mark.parametrize(
    ("mode", "status", "phrase"),
    [
        (0o600, "ok", "readable by its owner only"),
        (0o400, "ok", "readable by its owner only"),
        (0o640, "warn", "readable by its group (mode 0640)"),
        (0o644, "warn", "readable by its group and everyone (mode 0644)"),
    ],
)
def test_secret_files_should_be_readable_by_their_owner_only(
    tmp_path: Path, mode: int, status: str, phrase: str
) -> None:
    path = secret_file(tmp_path, "mk", CANARY, mode)
    ctx = context(settings_for(tmp_path), {"TELECRM_MASTER_KEY_FILE": str(path)})
    finding = only(check_secret_files(ctx, NAMES))
    assert (finding.status, phrase in finding.message) == (status, True), finding
    assert CANARY not in said([finding])


def test_mapping_credential_files_and_key_paths_are_checked_too(tmp_path: Path) -> None:
    token = secret_file(tmp_path, "hs", CANARY, 0o644)
    pem = secret_file(tmp_path, "sf.pem", CANARY, 0o644)
    env = {
        "TELECRM_HUBSPOT_TOKEN_FILE": str(token),
        "TELECRM_SALESFORCE_PRIVATE_KEY_FILE": str(pem),
    }
    findings = check_secret_files(context(settings_for(tmp_path), env), NAMES)
    assert [f.status for f in findings] == ["warn", "warn"]
    assert "TELECRM_HUBSPOT_TOKEN_FILE" in said(findings) and str(pem) in said(findings)


def test_a_file_variable_that_names_no_secret_is_reported_as_a_likely_typo(
    tmp_path: Path,
) -> None:
    env = {"TELECRM_MASTERKEY_FILE": str(secret_file(tmp_path, "mk", CANARY))}
    finding = only(check_secret_files(context(settings_for(tmp_path), env), NAMES))
    assert finding.status == "warn" and "TELECRM_MASTERKEY_FILE is set" in finding.message
    assert only(check_secret_files(context(settings_for(tmp_path)), NAMES)).status == "skip"


# -- destinations and providers --------------------------------------------------------------------


def _destinations(tmp_path: Path, env: Mapping[str, str], *names: str) -> list[Finding]:
    ctx = context(settings_for(tmp_path, destinations=list(names)), env)
    mappings, broken = load_mappings(ctx)
    return broken + check_destinations(ctx, mappings)


def test_a_destination_needs_its_credentials_from_the_environment_or_a_file(
    tmp_path: Path,
) -> None:
    assert only(_destinations(tmp_path, {})).status == "skip"
    missing = only(_destinations(tmp_path, {}, "hubspot"))
    assert missing.status == "fail" and "TELECRM_HUBSPOT_TOKEN" in missing.message
    token = str(secret_file(tmp_path, "hs", CANARY))
    present = only(_destinations(tmp_path, {"TELECRM_HUBSPOT_TOKEN_FILE": token}, "hubspot"))
    assert present.status == "ok" and "baa: false (no PHI goes there)" in present.message
    both = only(
        _destinations(
            tmp_path,
            {"TELECRM_HUBSPOT_TOKEN": CANARY, "TELECRM_HUBSPOT_TOKEN_FILE": token},
            "hubspot",
        )
    )
    assert both.status == "fail" and "is set as well" in both.message
    assert CANARY not in said([missing, present, both])


def test_a_mapping_that_does_not_state_its_baa_flag_is_a_warning(tmp_path: Path) -> None:
    shipped = (BUILTIN_DIR / "hubspot.yaml").read_text()
    assert "\nbaa: false\n" in shipped
    silent = secret_file(tmp_path, "hubspot-silent.yaml", shipped.replace("\nbaa: false\n", "\n"))
    env = {"TELECRM_HUBSPOT_TOKEN": CANARY, "TELECRM_HUBSPOT_URL": "http://127.0.0.1:9"}
    finding = only(_destinations(tmp_path, env, str(silent)))
    assert finding.status == "warn" and "does not state baa:" in finding.message
    assert "pointed at TELECRM_HUBSPOT_URL" in finding.message


def test_a_mapping_that_does_not_load_fails_with_its_file_and_line(tmp_path: Path) -> None:
    broken = secret_file(tmp_path, "broken.yaml", "version: 1\ndestination: [\n")
    finding = only(_destinations(tmp_path, {}, str(broken)))
    assert finding.status == "fail" and "broken.yaml" in finding.message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"messaging": False}, [("messaging", "skip")]),
        ({"messaging": True}, [("messaging", "warn")]),
        ({"messaging": True, "sendgrid_api_key": CANARY}, [("SendGrid", "warn")]),
        (
            {"messaging": True, "sendgrid_api_key": CANARY, "sendgrid_webhook_public_key": "k"},
            [("SendGrid", "ok")],
        ),
        ({"messaging": True, "twilio_account_sid": "AC1"}, [("Twilio", "fail")]),
        (
            {
                "messaging": True,
                "twilio_account_sid": "AC1",
                "twilio_auth_token": CANARY,
                "twilio_messaging_service_sid": "MG1",
            },
            [("Twilio", "ok")],
        ),
    ],
    ids=["off", "no-provider", "sendgrid-unsigned", "sendgrid", "twilio-half", "twilio"],
)
def test_messaging_providers_are_configured_whole(
    tmp_path: Path, values: dict[str, object], expected: list[tuple[str, str]]
) -> None:
    findings = check_messaging(context(settings_for(tmp_path, **values)))
    assert [(f.check, f.status) for f in findings] == expected
    assert CANARY not in said(findings)
