"""engactivity replies decoded by msgspec from the bytes as received (issue 16): the same buckets as the
hand-written walkers gave, and each bad reply a ProviderError naming its JSON path."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aht_exporter.model import Field, ProviderError
from aht_exporter.providers.liveperson import Selection, parse_engactivity, read_metrics
from aht_exporter.timebuckets import parse_iso
from tests.helpers import fixture

FIXTURES = Path(__file__).parents[1] / "fixtures"
# What the walkers (HEAD f321ab2) gave for each case; its `_about` says how it was made.
BEFORE = json.loads((FIXTURES / "parsed_liveperson_before_msgspec.json").read_text())

TEN = int(parse_iso("2026-03-02T10:00:00Z"))
BY_SKILL_AGENT = Selection(("queue", "agent"))
SPAN = (TEN - 900, TEN + 300)  # liveperson_intervals_skills.json: three closed intervals, 10:10 still filling
SKILLS = "$.metricsByIntervals[1].metricsData.skillsMetricsPerAgent.metricsPerSkill"
CELLS = f'{SKILLS}["12"].metricsPerAgent'


def raw(payload: object) -> bytes:
    return json.dumps(payload).encode()


def error_of(body: bytes, selection: Selection = BY_SKILL_AGENT, span: tuple[int, int] = SPAN) -> str:
    with pytest.raises(ProviderError) as caught:
        parse_engactivity(body, selection, *span)
    return str(caught.value)


def sample() -> dict[str, Any]:
    return copy.deepcopy(fixture("liveperson_intervals_skills.json"))


def agents(payload: dict[str, Any], interval: int = 1) -> dict[str, Any]:
    data = payload["metricsByIntervals"][interval]["metricsData"]
    cells: dict[str, Any] = data["skillsMetricsPerAgent"]["metricsPerSkill"]["12"]["metricsPerAgent"]
    return cells


# --- the same buckets as before --------------------------------------------------------------------------


def _selection(spec: dict[str, Any]) -> Selection:
    return Selection(
        tuple(spec["group_by"]),
        skills=None if spec["skills"] is None else tuple(spec["skills"]),
        agents=None if spec["agents"] is None else tuple(spec["agents"]),
    )


def _run(case: dict[str, Any]) -> dict[str, Any]:
    name = case["payload"]
    payload = BEFORE["synthetic"] if name == "synthetic" else fixture(name)
    selection = _selection(case["selection"])
    try:
        if case["call"] == "read_metrics":
            part = payload["metricsByIntervals"][case["interval"]]["metricsData"] if "interval" in case else payload
            cells = read_metrics(raw(part), selection)
            return {
                "ok": [
                    [[list(p) for p in labels], {str(k): v for k, v in values.items()}]
                    for labels, values in cells.items()
                ]
            }
        buckets = parse_engactivity(raw(payload), selection, case["start"], case["end"])
        return {
            "ok": [
                [b.start, b.end, [list(p) for p in b.labels], {str(k): v for k, v in b.values.items()}] for b in buckets
            ]
        }
    except ProviderError as exc:
        return {"error": str(exc)}


def _as_json_path(old: str) -> str:
    """The walkers' error with its path written from `$`, as every path is now (`r` and `response` were the
    names the old tests and parser gave the reply itself)."""
    for start, now in (("r.", "$."), ("response.", "$."), ("metricsByIntervals", "$.metricsByIntervals")):
        old = old.replace(f"engactivity response: {start}", f"engactivity response: {now}")
    return old


@pytest.mark.parametrize("case", BEFORE["cases"], ids=lambda c: f"{c['payload']}-{c['call']}")
def test_every_fixture_gives_what_the_walkers_gave(case: dict[str, Any]) -> None:
    """Every LivePerson sample and a seeded synthetic reply, under ten selections and several spans, give the
    very buckets (values, labels and order) the walkers gave; and where they failed, the same error, its path
    now written from `$`."""
    got = _run(case)
    if "ok" in case["result"]:
        assert got == case["result"]
    else:
        assert got == {"error": _as_json_path(case["result"]["error"])}


def test_the_cases_cover_every_sample_every_grain_and_both_outcomes() -> None:
    """The golden file is not a few easy cases: each engactivity sample, each block a selection reads, buckets
    as well as failures."""
    samples = {p.name for p in FIXTURES.glob("liveperson_*.json") if "metricsTotals" in p.read_text()}
    assert {c["payload"] for c in BEFORE["cases"]} == samples | {"synthetic"}
    oks = [c for c in BEFORE["cases"] if c["result"].get("ok")]  # with buckets or cells
    errors = [c for c in BEFORE["cases"] if "error" in c["result"]]
    assert len(oks) > 90 and len(errors) > 300
    grains = {tuple(c["selection"]["group_by"]) for c in oks if c["call"] == "parse_engactivity"}
    assert grains == {(), ("queue",), ("agent",), ("queue", "agent")}
    buckets = [
        b for c in oks if c["payload"] == "synthetic" and c["call"] == "parse_engactivity" for b in c["result"]["ok"]
    ]
    assert len(buckets) > 100 and any(b[3]["handle_time_seconds"] % 1 for b in buckets)  # fractions kept


# --- each kind of bad reply names its JSON path ----------------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        # A key left out.
        (
            lambda p: agents(p)["3"].pop("totalHandlingTime"),
            f'Object missing required field `totalHandlingTime` - at `{CELLS}["3"]`',
        ),
        (
            lambda p: p["metricsByIntervals"][0].pop("timestamp"),
            "Object missing required field `timestamp` - at `$.metricsByIntervals[0]`",
        ),
        (lambda p: p["metricsByIntervals"][2].pop("metricsData"), "$.metricsByIntervals[2].metricsData is missing"),
        (
            lambda p: p["metricsByIntervals"][1]["metricsData"]["skillsMetricsPerAgent"]["metricsPerSkill"]["12"].pop(
                "metricsPerAgent"
            ),
            f"{CELLS} is missing",
        ),
        (lambda p: p.pop("metricsByIntervals"), "$.metricsByIntervals is missing"),
        # A value of the wrong type.
        (
            lambda p: agents(p)["8"].update(totalInteractiveChats="1"),
            f'Expected `int | float`, got `str` - at `{CELLS}["8"].totalInteractiveChats`',
        ),
        (
            lambda p: agents(p)["8"].update(totalHandlingTime=True),
            f'Expected `int | float`, got `bool` - at `{CELLS}["8"].totalHandlingTime`',
        ),
        (
            lambda p: agents(p)["8"].update(totalHandlingTime=None),
            f'Expected `int | float`, got `null` - at `{CELLS}["8"].totalHandlingTime`',
        ),
        (
            lambda p: p["metricsByIntervals"][3].update(timestamp="1772445300000"),
            "Expected `int | float`, got `str` - at `$.metricsByIntervals[3].timestamp`",
        ),
        (
            lambda p: p["metricsByIntervals"][3].update(timestamp=1772445300000.5),
            "$.metricsByIntervals[3].timestamp 1772445300000.5 is not a whole number (UTC ms)",
        ),
        (
            lambda p: p.update(metricsByIntervals={"0": {}}),
            "Expected `array | null`, got `object` - at `$.metricsByIntervals`",
        ),
        # The wrong nesting.
        (
            lambda p: p["metricsByIntervals"].__setitem__(1, [p["metricsByIntervals"][1]]),
            "Expected `object`, got `array` - at `$.metricsByIntervals[1]`",
        ),
        (
            lambda p: p["metricsByIntervals"][1].update(metricsData=[{}]),
            "Expected `object`, got `array` - at `$.metricsByIntervals[1].metricsData`",
        ),
        (
            lambda p: p["metricsByIntervals"][1].update(metricsData=None),
            "Expected `object`, got `null` - at `$.metricsByIntervals[1].metricsData`",
        ),
        (
            lambda p: p["metricsByIntervals"][1]["metricsData"].update(skillsMetricsPerAgent="none"),
            "Expected `object`, got `str` - at `$.metricsByIntervals[1].metricsData.skillsMetricsPerAgent`",
        ),
        (
            lambda p: p["metricsByIntervals"][1]["metricsData"]["skillsMetricsPerAgent"].update(metricsPerSkill=[]),
            f"Expected `object`, got `array` - at `{SKILLS}`",
        ),
        (
            lambda p: p["metricsByIntervals"][1]["metricsData"]["skillsMetricsPerAgent"]["metricsPerSkill"].update(
                {"12": 5}
            ),
            f'Expected `object`, got `int` - at `{SKILLS}["12"]`',
        ),
        (lambda p: agents(p).update({"3": [agents(p)["3"]]}), f'Expected `object`, got `array` - at `{CELLS}["3"]`'),
        (
            lambda p: agents(p).update({"3": {"metrics": agents(p)["3"]}}),
            f'Object missing required field `totalHandlingTime` - at `{CELLS}["3"]`',
        ),
        # Numbers no figure can be.
        (
            lambda p: agents(p)["8"].update(totalHandlingTime=10**400),
            f'{CELLS}["8"].totalHandlingTime: about 10^400 is above the limit of 1e+12 s',
        ),
        (
            lambda p: agents(p)["8"].update(totalHandlingTime=1.7e308),
            f'{CELLS}["8"].totalHandlingTime: 1.7e+308 is above the limit of 1e+12 s',
        ),
        (
            lambda p: agents(p)["8"].update(totalInteractiveChats=10**12 + 1),
            f'{CELLS}["8"].totalInteractiveChats: 1000000000001 is above the limit of 1e+12 contacts',
        ),
        (
            lambda p: agents(p)["8"].update(totalInteractiveChats=-5),
            f'{CELLS}["8"].totalInteractiveChats: -5 is negative',
        ),
        (lambda p: agents(p)["8"].update(totalHandlingTime=-0.5), f'{CELLS}["8"].totalHandlingTime: -0.5 is negative'),
        (
            lambda p: agents(p)["8"].update(totalHandlingTime=-(10**400)),
            f'{CELLS}["8"].totalHandlingTime: about -10^400 is negative',
        ),
        (
            lambda p: p["metricsByIntervals"][0].update(timestamp=10**30),
            "$.metricsByIntervals[0].timestamp about 10^30 is not a time (UTC ms)",
        ),
        (
            lambda p: p["metricsByIntervals"][0].update(timestamp=-300000),
            "$.metricsByIntervals[0].timestamp -300000 is not a time (UTC ms)",
        ),
    ],
)
def test_a_bad_reply_fails_naming_the_json_path(mutate: Mutation, message: str) -> None:
    payload = sample()
    mutate(payload)
    assert error_of(raw(payload)) == f"engactivity response: {message}"


def test_a_float_past_any_double_fails_naming_its_path() -> None:
    """`1e400` is valid JSON that no double holds: msgspec says so, at its path, where json.loads made it inf."""
    body = raw(sample()).replace(b'"totalHandlingTime": 95,', b'"totalHandlingTime": 1e400,')
    assert error_of(body) == f'engactivity response: Number out of range - at `{CELLS}["8"].totalHandlingTime`'


def test_the_limits_themselves_are_figures() -> None:
    payload = sample()
    agents(payload)["8"].update(totalHandlingTime=10**12, totalInteractiveChats=1e12)
    buckets = parse_engactivity(raw(payload), BY_SKILL_AGENT, *SPAN)
    values = next(b.values for b in buckets if ("agent", "8") in b.labels and b.start == TEN)
    assert values == {Field.HANDLE_TIME: 1e12, Field.CONTACTS_HANDLED: 1e12}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # 100,000 levels: an array where the reply's object goes is refused before it is walked.
        (b"[" * 100_000 + b"]" * 100_000, "engactivity response: Expected `object`, got `array` - at `$`"),
        (
            b'{"metricsByIntervals": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "engactivity response: Expected `object`, got `array` - at `$.metricsByIntervals[0]`",
        ),
        # Deep inside a value kept raw, skipped or of any type: msgspec's depth limit, which gives no path.
        (
            b'{"metricsByIntervals": [{"timestamp": 1772446200000, "metricsData": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}]}",
            "engactivity response: nested too deeply to be an engactivity reply",
        ),
        (
            b'{"added": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b"}",
            "engactivity response: nested too deeply to be an engactivity reply",
        ),
        (
            b'{"message": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
            "engactivity response: nested too deeply to be an engactivity reply",
        ),
    ],
    ids=["array", "in-the-list", "in-metricsData", "in-an-added-key", "in-the-error-text"],
)
def test_deep_json_fails_in_one_line(body: bytes, message: str) -> None:
    assert error_of(body) == message


def test_nesting_a_reply_may_hold_is_read() -> None:
    """Depth is refused only past msgspec's limit: an added field 400 levels deep is skipped like any other."""
    payload = sample()
    reference = parse_engactivity(raw(payload), BY_SKILL_AGENT, *SPAN)
    body = raw(payload).replace(
        b'{"metricsByIntervals"', b'{"added": ' + b"[" * 400 + b"]" * 400 + b', "metricsByIntervals"', 1
    )
    assert parse_engactivity(body, BY_SKILL_AGENT, *SPAN) == reference


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "'<html><body>502 Bad Gateway</body></html>'"),
        (b'{"metricsByIntervals": [', "'{\"metricsByIntervals\": ['"),
        (b"", "''"),
        (b'{"metricsByIntervals": [], "x": NaN}', '\'{"metricsByIntervals": [], "x": NaN}\''),
        (b'{"metricsByIntervals": [], "message": "\xff"}', '\'{"metricsByIntervals": [], "message": "\ufffd"}\''),
        # A lone surrogate's escape: json.loads took it, msgspec does not (nor does it for Genesys).
        (b'{"metricsByIntervals": [], "\\ud800": 1}', '\'{"metricsByIntervals": [], "\\\\ud800": 1}\''),
    ],
    ids=["html", "truncated", "empty", "nan", "not-utf8", "lone-surrogate"],
)
def test_a_body_that_is_not_json_says_so_with_its_start_and_status(body: bytes, shown: str) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_engactivity(body, BY_SKILL_AGENT, *SPAN, status=203)
    assert str(caught.value) == f"engactivity: response is not JSON (HTTP 203, {shown})"
    assert caught.value.status == 203


@pytest.mark.parametrize(
    ("body", "vendor"),
    [
        ({"error": {"message": "Account is not authorized", "internalCode": 23}}, "23: Account is not authorized"),
        (
            {"error": "access_denied", "error_description": "Account is not authorized"},
            "access_denied: Account is not authorized",
        ),
        (
            {"message": "Engagement Activity is temporarily unavailable", "status": 503},
            "Engagement Activity is temporarily unavailable",
        ),
        ({"code": 500, "description": "internal"}, "500: internal"),
        ({"metricsByIntervals": None, "message": ["any", {"type": 1}]}, "['any', {'type': 1}]"),
    ],
)
def test_an_error_in_a_200_is_the_vendors_words_never_no_data(body: dict[str, Any], vendor: str) -> None:
    assert error_of(raw(body)) == f"engactivity response: the vendor answered 200 with an error: {vendor}"


def test_an_empty_or_null_interval_list_without_an_error_says_which() -> None:
    assert error_of(b"{}") == "engactivity response: $.metricsByIntervals is missing"
    assert error_of(b'{"metricsByIntervals": null}') == "engactivity response: $.metricsByIntervals is null"
    assert error_of(b'{"metricsByIntervals": []}', span=(TEN, TEN + 300)).startswith(
        "engactivity response: no interval ends at 2026-03-02T10:05:00.000Z"
    )


def test_read_metrics_names_the_path_it_is_given() -> None:
    body = raw({"metricsTotals": {"totalHandlingTime": "12", "totalInteractiveChats": 1}})
    with pytest.raises(ProviderError) as caught:
        read_metrics(body, Selection(()), "$.metricsByIntervals[7].metricsData")
    assert str(caught.value) == (
        "engactivity response: Expected `int | float`, got `str` - at "
        "`$.metricsByIntervals[7].metricsData.metricsTotals.totalHandlingTime`"
    )
    with pytest.raises(ProviderError, match=r"^engactivity response: \$ is not JSON$"):
        read_metrics(b"{", Selection(()))


# --- what is not read cannot fail a poll, as before ------------------------------------------------------


BROKEN = [{"metricsPerAgent": "x"}, [1], "text", None, {"totalHandlingTime": -5}]


@pytest.mark.parametrize("broken", BROKEN, ids=repr)
def test_the_interval_still_filling_and_those_before_the_span_are_never_read(broken: object) -> None:
    payload = sample()
    reference = parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 300, TEN + 300)
    assert {b.end for b in reference} == {TEN + 300}  # the interval ending 10:00 is empty
    payload["metricsByIntervals"][0]["metricsData"] = broken  # ends 10:10: still filling
    payload["metricsByIntervals"][4]["metricsData"] = broken  # ends 09:50: before the span
    del payload["metricsByIntervals"][3]["metricsData"]  # ends 09:55: before the span
    assert parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 300, TEN + 300) == reference


@pytest.mark.parametrize("broken", BROKEN, ids=repr)
@pytest.mark.parametrize(
    ("selection", "unread"),
    [
        (
            Selection(("queue", "agent")),
            ["agentsMetrics", "metricsTotals", "skills.metricsTotals", "skill.metricsTotals"],
        ),
        (Selection(("queue",)), ["agentsMetrics", "metricsTotals", "skills.metricsTotals", "skill.metricsPerAgent"]),
        (Selection((), skills=("12",)), ["agentsMetrics", "metricsTotals", "skills.metricsPerSkill"]),
    ],
    ids=["per-skill-and-agent", "per-skill", "skill-totals"],
)
def test_a_block_the_selection_does_not_read_may_hold_anything(
    broken: object, selection: Selection, unread: list[str]
) -> None:
    payload = sample()
    reference = parse_engactivity(raw(payload), selection, *SPAN)
    for interval in payload["metricsByIntervals"]:
        data = interval["metricsData"]
        skills = data["skillsMetricsPerAgent"]
        places = {
            "agentsMetrics": (data, "agentsMetrics"),
            "metricsTotals": (data, "metricsTotals"),
            "skills.metricsTotals": (skills, "metricsTotals"),
            "skills.metricsPerSkill": (skills, "metricsPerSkill"),
        }
        for name in unread:
            if name.startswith("skill."):
                for entry in skills["metricsPerSkill"].values():
                    entry[name.removeprefix("skill.")] = broken
            else:
                target, key = places[name]
                target[key] = broken
    assert parse_engactivity(raw(payload), selection, *SPAN) == reference


def test_a_key_that_is_no_id_may_hold_anything_even_among_ids() -> None:
    payload = sample()
    reference = parse_engactivity(raw(payload), BY_SKILL_AGENT, *SPAN)
    for interval in payload["metricsByIntervals"]:
        skills = interval["metricsData"]["skillsMetricsPerAgent"]["metricsPerSkill"]
        skills["all"] = [1, {"totalHandlingTime": "x"}]
        for entry in skills.values():
            if isinstance(entry, dict):
                entry["metricsPerAgent"]["8\n"] = {"totalHandlingTime": -1}
                entry["metricsPerAgent"]["sum"] = None
    assert parse_engactivity(raw(payload), BY_SKILL_AGENT, *SPAN) == reference


# --- sparse replies, as before ------------------------------------------------------------------------------


def test_a_cell_with_only_figures_we_do_not_export_is_kept_and_an_all_zero_one_is_not() -> None:
    """[doc] skills and agents without data are left out; a cell that held only non-interactive chats is data."""
    body = {
        "metricsTotals": {"totalHandlingTime": 0, "totalInteractiveChats": 0, "connectedEngagements": 2},
        "agentsMetrics": {
            "metricsPerAgent": {
                "1": {"totalHandlingTime": 0, "totalInteractiveChats": 0, "nonInteractiveTotalHandlingTime": 9},
                "2": {"totalHandlingTime": 0, "totalInteractiveChats": 0.0, "totalNonInteractiveChats": 0},
                "3": {"totalHandlingTime": 0, "totalInteractiveChats": 0, "connectedEngagements": "2"},
                "4": {"totalHandlingTime": 0, "totalInteractiveChats": 0, "totalNonInteractiveChats": True},
            }
        },
    }
    zero = {Field.HANDLE_TIME: 0.0, Field.CONTACTS_HANDLED: 0.0}
    assert read_metrics(raw(body), Selection(())) == {(("media_type", "chat"),): zero}
    assert read_metrics(raw(body), Selection(("agent",))) == {(("agent", "1"), ("media_type", "chat")): zero}


def test_a_missing_counter_is_not_zero_for_liveperson() -> None:
    """[doc] every metric is listed, zeros included, even with no data at all (seed 002's no-data example):
    a metric left out is a changed schema, never a quiet interval (issue 13's missing-is-zero rule is for the
    vendors that leave zeros out)."""
    payload = fixture("liveperson_seed002_no_data.json")
    assert payload["skillsMetricsPerAgent"]["metricsTotals"]["totalHandlingTime"] == 0
    del payload["skillsMetricsPerAgent"]["metricsTotals"]["totalHandlingTime"]
    with pytest.raises(ProviderError) as caught:
        read_metrics(raw(payload), Selection((), skills=("4",)))
    assert str(caught.value) == (
        "engactivity response: Object missing required field `totalHandlingTime` - at "
        "`$.skillsMetricsPerAgent.metricsTotals`"
    )


# --- the benchmark runs -------------------------------------------------------------------------------------


TINY_BENCH = ["--intervals=3", "--skills=2", "--agents=4", "--skills-per-agent=1", "--repeat=1"]


def test_the_parse_benchmark_runs_and_counts_every_cell() -> None:
    """bench/parse_liveperson.py at a tiny size: its reply parses at each grain into the buckets it holds."""
    repo = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, str(repo / "bench" / "parse_liveperson.py"), *TINY_BENCH],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split("  ")[0].strip(): line.split()[-1] for line in done.stdout.splitlines()[4:8]}
    # Every agent in its one skill handled a chat or not in each interval: at most 3 x 4 cells.
    assert set(rows) == {"skill (the default)", "skill and agent", "agent", "account"}, done.stdout
    assert rows["account"] == "3" and 0 < int(rows["skill and agent"]) <= 12 and int(rows["agent"]) <= 12
    assert "3 closed intervals, 12 agent cells" in done.stdout
