"""Journey files are refused before they run, with file, line and the problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from telecrm.cli import app
from telecrm.journeys.definition import JourneyError
from telecrm.journeys.validate import BUILTIN_DIR, check_text, load_all
from telecrm.messaging.templates import TemplateCatalog

TEMPLATES = {(t.name, t.channel) for t in TemplateCatalog.load().all()}
HEAD = "version: 1\nname: probe\nentry: {event: questionnaire.started}\n"


def _refused(body: str) -> JourneyError:
    with pytest.raises(JourneyError) as caught:
        check_text(HEAD + body, "probe.yaml", TEMPLATES)
    return caught.value


@pytest.mark.parametrize(
    ("body", "line", "problem"),
    [
        (
            "steps:\n  - {id: a, send_email: win_bak}\n",
            5,
            "unknown email template 'win_bak'",
        ),
        (
            "steps:\n  - {id: a, send_sms: win_back}\n",
            5,
            "it is an email template: use send_email",
        ),
        (
            "steps:\n  - {id: a, send_email: win_back}\n"
            "  - {id: b, branch: {if: {stage: [lead]}, then: a, else: c}}\n  - {id: c, exit: x}\n",
            6,
            "the steps a -> b -> a loop without a wait",
        ),
        (
            "steps:\n  - {id: a, branch: {if: {stage: [lead]}, then: b}}\n  - {id: b, exit: x}\n",
            5,
            "a branch needs `else`",
        ),
        (
            "steps:\n  - {id: a, exit: x}\n  - {id: b, send_email: win_back}\n",
            6,
            "step 'b' is unreachable",
        ),
        (
            "steps:\n  - {id: a, wait: {event: order.shipped, timeout: 2d}}\n",
            5,
            "unknown event type 'order.shipped'",
        ),
        (
            "filters: [{field: favourite_colour, equals: blue}]\nsteps:\n  - {id: a, exit: x}\n",
            4,
            "'favourite_colour' is not in the field catalog",
        ),
        (
            "steps:\n  - id: a\n    split: {x: {percent: 60, next: b}, y: {percent: 30, next: b}}\n"
            "  - {id: b, exit: x}\n",
            6,
            "the arms add up to 90 %, not 100 %",
        ),
        (
            "steps:\n  - {id: a, wait: 3 fortnights}\n",
            5,
            "expected a duration such as 30m",
        ),
        (
            "steps:\n  - {id: a, next: nowhere, send_email: win_back}\n",
            5,
            "no step is called 'nowhere'",
        ),
        (
            "steps:\n  - {id: a, webhook: {url: 'http://care.example.com', secret_env: S}}\n",
            5,
            "a webhook leaves over https",
        ),
        (
            "re_entry: sometimes\nsteps:\n  - {id: a, exit: x}\n",
            1,
            "re_entry: expected once, always or a cooldown",
        ),
        ("steps:\n  - {id: a, wait: {event: order.paid}}\n", 5, "needs a `timeout`"),
    ],
)
def test_a_bad_journey_is_refused_with_its_line(body: str, line: int, problem: str) -> None:
    err = _refused(body)
    assert problem in str(err)
    assert err.line == line, str(err)
    assert str(err).startswith(f"probe.yaml:{line}:")


def test_broken_yaml_names_the_line() -> None:
    err = _refused("steps:\n  - {id: a, exit: x\n")
    assert "not valid YAML" in str(err) and err.line is not None


def test_every_builtin_validates_and_there_are_eight() -> None:
    names = sorted(lj.name for lj in load_all(None, TEMPLATES))
    assert names == [
        "consultation_follow_up",
        "lead_nurturing",
        "provider_performance",
        "refill_reminder_campaign",
        "satisfaction_survey",
        "subscription_renewal",
        "upsell_cross_sell",
        "win_back",
    ]


def test_a_users_file_replaces_the_builtin_of_the_same_name(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "win_back.yaml").read_text().replace("holdout: 10", "holdout: 25")
    (tmp_path / "win_back.yaml").write_text(text)
    loaded = {lj.name: lj for lj in load_all(tmp_path, TEMPLATES)}
    assert loaded["win_back"].journey.holdout == 25
    assert loaded["win_back"].path == str(tmp_path / "win_back.yaml")


def test_validate_command_exits_non_zero_and_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "steps:\n  - {id: a, send_email: nope}\n")
    result = CliRunner().invoke(
        app, ["journeys", "validate", str(bad)], env={"TELECRM_HOME": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert f"{bad}:5" in result.stdout.replace("\n", "")


def test_an_unknown_segment_is_refused_with_its_line() -> None:
    err = _refused("filters: [{segment: vips}]\nsteps:\n  - {id: a, exit: x}\n")
    assert err.line == 4 and "no segment is called 'vips'" in str(err)


def test_segments_expand_and_a_users_segment_replaces_the_builtin(tmp_path: Path) -> None:
    (tmp_path / "segments.yaml").write_text(
        "version: 1\nsegments:\n  marketable_email: [{field: total_order_value, at_least: 50}]\n"
    )
    builtin = {lj.name: lj for lj in load_all(None, TEMPLATES)}
    edited = {lj.name: lj for lj in load_all(tmp_path, TEMPLATES)}
    before = builtin["win_back"].journey.filters
    after = edited["win_back"].journey.filters
    assert [c.consent is not None for c in before] == [True]
    assert [(c.field, c.at_least) for c in after] == [("total_order_value", 50)]
    # What runs changed, so the version changes; a journey not using the segment keeps its own.
    assert builtin["win_back"].digest != edited["win_back"].digest
    assert builtin["subscription_renewal"].digest == edited["subscription_renewal"].digest


def test_a_bad_segments_file_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "segments.yaml").write_text(
        "version: 1\nsegments:\n  rich:\n    - {field: net_worth, at_least: 1}\n"
    )
    with pytest.raises(JourneyError) as caught:
        load_all(tmp_path, TEMPLATES)
    assert caught.value.line == 4 and "'net_worth' is not in the field catalog" in str(caught.value)


def test_what_is_stored_as_a_version_reads_back_as_the_same_journey() -> None:
    from telecrm.journeys.definition import parse_journey

    for lj in load_all(None, TEMPLATES):
        assert parse_journey(lj.body, lj.name)[0] == lj.journey
