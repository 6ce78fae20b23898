"""engactivity JSON -> buckets, on seed 002's own examples and a realistic 5-minute reply."""

import contextlib
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aht_exporter.model import Field, ProviderError, make_labels
from aht_exporter.providers.liveperson import (
    Selection,
    parse_engactivity,
    query_string,
    read_metrics,
    timeframe_minutes,
)
from aht_exporter.timebuckets import parse_iso
from tests.helpers import fixture

H, C = Field.HANDLE_TIME, Field.CONTACTS_HANDLED
TEN = int(parse_iso("2026-03-02T10:00:00Z"))
NOW = TEN + 7 * 60  # 10:07: the interval ending 10:10 is still filling
BY_SKILL_AGENT = Selection(("queue", "agent"))


ENGACTIVITY_PAGE = "https://developers.liveperson.com/data-operational-realtime-engagement-activity.html"
FIXTURES = Path(__file__).parents[1] / "fixtures"
TAGS = re.compile(r"\[(doc|sample|unverified)\b[^\]]*\]")


def chat(**labels: str) -> tuple[tuple[str, str], ...]:
    return make_labels(media_type="chat", **labels)


def raw(payload: object) -> bytes:
    """A reply's body as the provider receives it: the parser decodes the bytes itself."""
    return json.dumps(payload).encode()


# --- where each fixture comes from ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("liveperson_*.json")), ids=lambda p: p.name)
def test_every_liveperson_fixture_cites_the_vendor_page_of_each_shape_and_tags_it(path: Path) -> None:
    """A shape is LivePerson's when a page says so (the URL), or ours in LivePerson's shape; each says which
    (docs/providers/liveperson.md, "How facts are tagged")."""
    data = json.loads(path.read_text())
    source = data["_source"]
    cited = source.values() if isinstance(source, dict) else [source]
    if isinstance(source, dict):  # one citation per shape held
        assert set(source) == set(data) - {"_source"}
    for text in cited:
        assert "https://developers.liveperson.com/" in text or "docs/providers/liveperson.md" in text, text
        assert TAGS.search(text), f"{path.name}: {text!r} carries no [doc], [sample] or [unverified] tag"


def test_skill_minus_1_is_read_like_any_skill_and_tagged_unverified() -> None:
    """[unverified] the Engagement Activity page never shows -1: our fixture says so, and the parser reads it
    like any other id rather than give it a meaning."""
    payload = fixture("liveperson_intervals_skills.json")
    assert "-1" in payload["_source"] and "[unverified]" in payload["_source"]
    skills = {
        dict(b.labels)["queue"] for b in parse_engactivity(raw(payload), Selection(("queue",)), TEN - 900, TEN + 300)
    }
    assert skills == {"12", "-1"}


def test_a_skill_without_data_is_left_out_as_the_page_shows() -> None:
    """[doc] skillIds=all&agentIds=3: only skill 2 had data, so only skill 2 is in the map; no zero series."""
    payload = fixture("liveperson_seed002_skills_all_agent3.json")
    assert list(payload["skillsMetricsPerAgent"]["metricsPerSkill"]) == ["2"]
    assert read_metrics(raw(payload), Selection(("queue",))) == {chat(queue="2"): {H: 12.0, C: 1.0}}


# --- seed 002, every example ------------------------------------------------------------------------


def test_seed_002_first_example_skill_2_agent_3_has_aht_12_seconds_over_1_chat() -> None:
    """The issue's done-when fact: skillIds=2, the data is agent 3's."""
    cells = read_metrics(raw(fixture("liveperson_seed002_skill2.json")), Selection(("queue", "agent"), skills=("2",)))
    assert cells == {chat(queue="2", agent="3"): {H: 12.0, C: 1.0}}
    values = cells[chat(queue="2", agent="3")]
    assert values[H] / values[C] == 12.0  # AHT; the 5 s of non-interactive handling are not in it


def test_seed_002_first_example_by_skill_reads_the_skill_totals() -> None:
    cells = read_metrics(raw(fixture("liveperson_seed002_skill2.json")), Selection(("queue",)))
    assert cells == {chat(queue="2"): {H: 12.0, C: 1.0}}


def test_seed_002_first_example_with_only_a_skill_filter_reads_the_block_totals() -> None:
    cells = read_metrics(raw(fixture("liveperson_seed002_skill2.json")), Selection((), skills=("2",)))
    assert cells == {chat(): {H: 12.0, C: 1.0}}


def test_seed_002_skills_all_and_agent_3_uses_the_skills_block_per_agent() -> None:
    payload = fixture("liveperson_seed002_skills_all_agent3.json")
    selection = Selection(("queue", "agent"), agents=("3",))
    assert selection.params() == {"skillIds": "all", "agentIds": "3"}
    assert read_metrics(raw(payload), selection) == {chat(queue="2", agent="3"): {H: 12.0, C: 1.0}}
    # Grouped by skill only, with the agent filter: the skill's figures for that agent.
    assert read_metrics(raw(payload), Selection(("queue",), agents=("3",))) == {chat(queue="2"): {H: 12.0, C: 1.0}}


def test_seed_002_skills_all_and_agent_3_by_agent_only() -> None:
    payload = fixture("liveperson_seed002_skills_all_agent3.json")
    assert read_metrics(raw(payload), Selection(("agent",))) == {chat(agent="3"): {H: 12.0, C: 1.0}}
    assert read_metrics(raw(payload), Selection((), agents=("3",))) == {chat(): {H: 12.0, C: 1.0}}


def test_seed_002_account_totals() -> None:
    assert read_metrics(raw(fixture("liveperson_seed002_totals.json")), Selection(())) == {chat(): {H: 12.0, C: 1.0}}


@pytest.mark.parametrize(
    "selection",
    [Selection(("queue", "agent")), Selection(("queue",)), Selection(("agent",), skills=("4",)), Selection(("agent",))],
)
def test_seed_002_no_data_gives_no_cells(selection: Selection) -> None:
    """Empty `{}` maps and all-zero totals: nothing happened, so no label set at all."""
    assert read_metrics(raw(fixture("liveperson_seed002_no_data.json")), selection) == {}


def test_seed_002_agent_intervals_each_interval_and_the_whole_timeframe() -> None:
    payload = fixture("liveperson_seed002_agent2_intervals.json")
    selection = Selection(("agent",))
    per_interval = [read_metrics(raw(i["metricsData"]), selection) for i in payload["metricsByIntervals"]]
    assert per_interval == [{chat(agent="2"): {H: 12.0, C: 1.0}}, {}, {}]
    assert read_metrics(raw(payload), selection) == {chat(agent="2"): {H: 12.0, C: 1.0}}


def test_seed_002_skill_without_data_intervals() -> None:
    payload = fixture("liveperson_seed002_skill_no_data_intervals.json")
    selection = Selection(("queue",), skills=("5",))
    assert [read_metrics(raw(i["metricsData"]), selection) for i in payload["metricsByIntervals"]] == [{}, {}, {}]
    assert read_metrics(raw(payload), selection) == {}


def test_seed_002_account_intervals_newest_is_still_filling_and_never_exported() -> None:
    payload = fixture("liveperson_seed002_totals_intervals.json")
    newest = payload["metricsByIntervals"][0]["timestamp"] // 1000
    # [doc] the newest interval is the one still filling: a span that reaches it means the vendor's clock
    # is behind ours, and its partial figures must not pass for a closed bucket.
    with pytest.raises(ProviderError, match=r"the newest interval, still filling, ends at 2014-10-07T11:20:00.000Z"):
        parse_engactivity(raw(payload), Selection(()), newest - 300, newest)


# --- a realistic 5-minute reply ---------------------------------------------------------------------


def test_intervals_become_5_minute_buckets_keyed_by_their_end() -> None:
    payload = fixture("liveperson_intervals_skills.json")
    buckets = parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 900, TEN + 300)
    got = {(b.start, b.labels): b.values for b in buckets}
    assert got == {
        (TEN, chat(queue="12", agent="3")): {H: 300.0, C: 2.0},
        (TEN, chat(queue="12", agent="8")): {H: 95.0, C: 1.0},
        # skill -1 (unassigned), agent 7: only non-interactive chats; kept, with nothing handled
        (TEN, chat(queue="-1", agent="7")): {H: 0.0, C: 0.0},
        (TEN - 600, chat(queue="12", agent="8")): {H: 420.0, C: 3.0},  # 09:50-09:55
        (TEN - 900, chat(queue="-1", agent="7")): {H: 61.0, C: 1.0},  # 09:45-09:50
    }
    assert all(b.end - b.start == 300 for b in buckets)


def test_the_in_progress_interval_never_leaks_into_a_bucket() -> None:
    payload = fixture("liveperson_intervals_skills.json")
    buckets = parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 900, TEN + 300)
    assert max(b.end for b in buckets) == TEN + 300
    assert 1000.0 not in [b.values[H] for b in buckets]  # the 10:05-10:10 interval's figure
    # Nor does any closed interval after the span asked for.
    assert {b.end for b in parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 900, TEN)} == {TEN - 300, TEN - 600}


def test_intervals_before_the_span_are_dropped() -> None:
    payload = fixture("liveperson_intervals_skills.json")
    buckets = parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN, TEN + 300)
    assert {b.start for b in buckets} == {TEN}


def test_by_skill_sums_agents_and_keeps_non_interactive_out() -> None:
    payload = fixture("liveperson_intervals_skills.json")
    buckets = parse_engactivity(raw(payload), Selection(("queue",)), TEN, TEN + 300)
    assert {b.labels: b.values for b in buckets} == {
        chat(queue="12"): {H: 395.0, C: 3.0},
        chat(queue="-1"): {H: 0.0, C: 0.0},
    }


def test_skill_and_agent_filters_are_applied_even_if_the_vendor_sends_more() -> None:
    payload = fixture("liveperson_intervals_skills.json")
    buckets = parse_engactivity(
        raw(payload), Selection(("agent",), skills=("12",), agents=("8",)), TEN - 900, TEN + 300
    )
    assert {(b.start, b.labels): b.values for b in buckets} == {
        (TEN, chat(agent="8")): {H: 95.0, C: 1.0},
        (TEN - 600, chat(agent="8")): {H: 420.0, C: 3.0},
    }


def test_a_missing_interval_inside_the_span_fails_instead_of_reading_as_empty() -> None:
    payload = fixture("liveperson_intervals_skills.json")
    del payload["metricsByIntervals"][2]  # the one ending 10:00
    with pytest.raises(ProviderError, match=r"no interval ends at 2026-03-02T10:00:00.000Z"):
        parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 900, TEN + 300)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("metricsByIntervals"), "$.metricsByIntervals is missing"),
        (
            lambda p: p["metricsByIntervals"][1].pop("timestamp"),
            "Object missing required field `timestamp` - at `$.metricsByIntervals[1]`",
        ),
        (
            lambda p: p["metricsByIntervals"][1].update(timestamp="x"),
            "Expected `int | float`, got `str` - at `$.metricsByIntervals[1].timestamp`",
        ),
        (
            lambda p: p["metricsByIntervals"][1].update(timestamp=1772445660000),
            "$.metricsByIntervals[1].timestamp 1772445660000 is not on a 5-minute boundary",
        ),
        (
            lambda p: p["metricsByIntervals"][2].update(timestamp=1772445900000),
            "$.metricsByIntervals[2].timestamp 1772445900000 appears twice",
        ),
        (lambda p: p["metricsByIntervals"][1].pop("metricsData"), "$.metricsByIntervals[1].metricsData is missing"),
        (
            lambda p: p["metricsByIntervals"][1]["metricsData"].pop("skillsMetricsPerAgent"),
            "$.metricsByIntervals[1].metricsData.skillsMetricsPerAgent is missing",
        ),
        (
            lambda p: p["metricsByIntervals"][1]["metricsData"]["skillsMetricsPerAgent"].update(metricsPerSkill=[]),
            "Expected `object`, got `array` - at "
            "`$.metricsByIntervals[1].metricsData.skillsMetricsPerAgent.metricsPerSkill`",
        ),
        (
            lambda p: p["metricsByIntervals"][1]["metricsData"]["skillsMetricsPerAgent"]["metricsPerSkill"]["12"][
                "metricsPerAgent"
            ]["3"].pop("totalHandlingTime"),
            "Object missing required field `totalHandlingTime` - at `$.metricsByIntervals[1].metricsData"
            '.skillsMetricsPerAgent.metricsPerSkill["12"].metricsPerAgent["3"]`',
        ),
        (
            lambda p: p["metricsByIntervals"][1]["metricsData"]["skillsMetricsPerAgent"]["metricsPerSkill"]["12"][
                "metricsPerAgent"
            ]["8"].update(totalInteractiveChats="1"),
            "Expected `int | float`, got `str` - at `$.metricsByIntervals[1].metricsData"
            '.skillsMetricsPerAgent.metricsPerSkill["12"].metricsPerAgent["8"].totalInteractiveChats`',
        ),
    ],
)
def test_a_bad_field_fails_the_poll_naming_its_json_path(mutate: Any, message: str) -> None:
    payload = copy.deepcopy(fixture("liveperson_intervals_skills.json"))
    mutate(payload)
    with pytest.raises(ProviderError) as caught:
        parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 900, TEN + 300)
    assert str(caught.value) == f"engactivity response: {message}"


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "Account is not authorized", "internalCode": 23}},
        {"error": "access_denied", "error_description": "Account is not authorized"},
        {"message": "Account is not authorized"},
    ],
)
def test_an_error_inside_a_200_carries_the_vendor_message(body: dict[str, Any]) -> None:
    with pytest.raises(ProviderError, match=r"the vendor answered 200 with an error: .*Account is not authorized"):
        parse_engactivity(raw(body), BY_SKILL_AGENT, TEN, TEN + 300)


def add_fields(value: Any) -> Any:
    """A schema change adding fields everywhere, id-keyed maps included."""
    if isinstance(value, dict):
        return {**{k: add_fields(v) for k, v in value.items()}, "addedInV2": {"note": "new"}, "flags": [1]}
    if isinstance(value, list):
        return [add_fields(v) for v in value]
    return value


def test_fields_added_by_the_vendor_are_survived_even_inside_id_maps() -> None:
    payload = fixture("liveperson_intervals_skills.json")
    for selection in (BY_SKILL_AGENT, Selection(("queue",)), Selection((), skills=("12",))):
        assert parse_engactivity(raw(add_fields(payload)), selection, TEN - 900, TEN + 300) == parse_engactivity(
            raw(payload), selection, TEN - 900, TEN + 300
        )
    agents = fixture("liveperson_seed002_agent2_intervals.json")
    assert read_metrics(raw(add_fields(agents)), Selection(("agent",))) == {chat(agent="2"): {H: 12.0, C: 1.0}}


def test_a_malformed_entry_under_an_id_still_fails() -> None:
    payload = fixture("liveperson_seed002_skill2.json")
    payload["skillsMetricsPerAgent"]["metricsPerSkill"]["2"]["metricsPerAgent"]["3"] = [12]
    with pytest.raises(ProviderError) as caught:
        read_metrics(raw(payload), BY_SKILL_AGENT)
    assert str(caught.value) == (
        "engactivity response: Expected `object`, got `array` - at "
        '`$.skillsMetricsPerAgent.metricsPerSkill["2"].metricsPerAgent["3"]`'
    )


def test_not_an_object_fails_clearly() -> None:
    with pytest.raises(ProviderError) as caught:
        parse_engactivity(raw([]), BY_SKILL_AGENT, TEN, TEN + 300)
    assert str(caught.value) == "engactivity response: Expected `object`, got `array` - at `$`"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=20,
)


def near_engactivity() -> st.SearchStrategy[Any]:
    scalar: st.SearchStrategy[Any] = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
        | st.just({})
        | st.just([])
    )
    metrics = st.dictionaries(st.sampled_from(["totalHandlingTime", "totalInteractiveChats", "x"]), scalar)
    per = st.dictionaries(
        st.sampled_from(["2", "-1", "3"]),
        st.fixed_dictionaries(
            {
                "metricsPerAgent": st.dictionaries(st.sampled_from(["3"]), metrics | scalar),
                "metricsTotals": metrics | scalar,
            }
        )
        | scalar,
    )
    block = st.fixed_dictionaries({}, optional={"metricsPerSkill": per | scalar, "metricsTotals": metrics | scalar})
    data = st.fixed_dictionaries({}, optional={"skillsMetricsPerAgent": block | scalar})
    stamp = st.sampled_from([TEN * 1000, (TEN + 300) * 1000, TEN * 1000 + 1]) | scalar
    interval = st.fixed_dictionaries({}, optional={"timestamp": stamp, "metricsData": data | scalar})
    return st.fixed_dictionaries({}, optional={"metricsByIntervals": st.lists(interval, max_size=3) | scalar}) | JSON


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_engactivity())
def test_only_provider_errors_escape_the_parser(payload: Any) -> None:
    with contextlib.suppress(ProviderError):
        parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN, TEN + 300)


# --- the request --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "params"),
    [
        (Selection(()), {}),
        (Selection(("queue",)), {"skillIds": "all"}),
        (Selection(("agent",)), {"agentIds": "all"}),
        (Selection(("queue", "agent")), {"skillIds": "all"}),
        (Selection((), skills=("4", "15")), {"skillIds": "4,15"}),
        (Selection((), agents=("3",)), {"agentIds": "3"}),
        (Selection(("agent",), skills=("4",)), {"skillIds": "4"}),
        (Selection(("queue",), agents=("3", "9")), {"skillIds": "all", "agentIds": "3,9"}),
        (Selection(("queue", "agent"), skills=("-1",), agents=("3",)), {"skillIds": "-1", "agentIds": "3"}),
    ],
)
def test_ids_are_asked_for_as_group_by_and_filters_require(selection: Selection, params: dict[str, str]) -> None:
    assert selection.params() == params


def test_query_string_keeps_commas_as_the_vendor_writes_them() -> None:
    assert (
        query_string(65, Selection(("queue",), skills=("4", "15", "3")))
        == "timeframe=65&v=1&interval=5&skillIds=4,15,3"
    )


@pytest.mark.parametrize(
    ("now", "start", "minutes"),
    [
        (NOW, TEN - 3600, 75),  # 67 minutes back -> 70, whole intervals, + one spare
        (TEN + 60, TEN - 1800, 40),  # 31 minutes back -> 35 + 5
        (TEN, TEN - 300, 10),  # exactly on a boundary
        (TEN + 14 * 60, TEN - 23 * 3600 - 45 * 60, 1440),  # the spare interval is clamped at 1440
    ],
)
def test_timeframe_is_whole_intervals_back_from_now_plus_one_spare(now: float, start: int, minutes: int) -> None:
    assert timeframe_minutes(now, start) == minutes
    assert minutes % 5 == 0  # the interval must divide the timeframe [doc]


def test_a_span_beyond_1440_minutes_is_refused_before_asking() -> None:
    with pytest.raises(ProviderError, match="1445 minutes back, beyond the 1440-minute timeframe"):
        timeframe_minutes(TEN + 60, TEN - 86400)


def test_seed_fixtures_are_the_seed_json() -> None:
    # Guard against a fixture being edited by hand: the first example is exactly the page's.
    payload = fixture("liveperson_seed002_skill2.json")
    assert payload.pop("_source").startswith(f"{ENGACTIVITY_PAGE}, example 'Request by skillIds=2")
    assert json.loads(json.dumps(payload)) == {
        "skillsMetricsPerAgent": {
            "metricsPerSkill": {
                "2": {
                    "metricsPerAgent": {
                        "3": {
                            "totalInteractiveChats": 1,
                            "totalNonInteractiveChats": 1,
                            "totalHandlingTime": 12,
                            "nonInteractiveTotalHandlingTime": 5,
                            "connectedEngagements": 2,
                        }
                    },
                    "metricsTotals": {
                        "totalInteractiveChats": 1,
                        "totalNonInteractiveChats": 1,
                        "totalHandlingTime": 12,
                        "nonInteractiveTotalHandlingTime": 5,
                        "connectedEngagements": 2,
                    },
                }
            },
            "metricsTotals": {
                "totalInteractiveChats": 1,
                "totalNonInteractiveChats": 1,
                "totalHandlingTime": 12,
                "nonInteractiveTotalHandlingTime": 5,
                "connectedEngagements": 2,
            },
        }
    }


# --- hostile numbers and keys (issue 12, sections 1 and 6) ----------------------------------------------------


def _agent_8(payload: dict[str, Any]) -> dict[str, Any]:
    cells = payload["metricsByIntervals"][1]["metricsData"]["skillsMetricsPerAgent"]["metricsPerSkill"]["12"]
    agents: dict[str, Any] = cells["metricsPerAgent"]
    return agents


AGENT_8 = '$.metricsByIntervals[1].metricsData.skillsMetricsPerAgent.metricsPerSkill["12"].metricsPerAgent["8"]'


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        # A JSON integer past any float: math.isfinite() of it raised OverflowError, an "internal error".
        ("totalHandlingTime", 10**400, "totalHandlingTime: about 10^400 is above the limit of 1e+12 s"),
        ("totalHandlingTime", 1.7e308, "totalHandlingTime: 1.7e+308 is above the limit of 1e+12 s"),
        ("totalInteractiveChats", 10**13, "totalInteractiveChats: 10000000000000 is above the limit of 1e+12 contacts"),
        ("totalInteractiveChats", -(10**400), "totalInteractiveChats: about -10^400 is negative"),
        ("totalInteractiveChats", -5, "totalInteractiveChats: -5 is negative"),
    ],
)
def test_a_figure_out_of_range_fails_the_poll_with_one_line_naming_its_path(
    name: str, value: object, message: str
) -> None:
    payload = copy.deepcopy(fixture("liveperson_intervals_skills.json"))
    _agent_8(payload)["8"][name] = value
    with pytest.raises(ProviderError) as caught:
        parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 900, TEN + 300)
    assert str(caught.value) == f"engactivity response: {AGENT_8}.{message}"


@pytest.mark.parametrize("stamp", [-(10**20) * 300_000, 10**20 * 300_000, 1e300])
def test_a_timestamp_beyond_any_date_fails_the_poll_naming_it(stamp: float) -> None:
    payload = copy.deepcopy(fixture("liveperson_intervals_skills.json"))
    payload["metricsByIntervals"][0]["timestamp"] = stamp
    with pytest.raises(
        ProviderError, match=r"^engactivity response: \$\.metricsByIntervals\[0\]\.timestamp .* is not a time"
    ):
        parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 900, TEN + 300)


@pytest.mark.parametrize("key", ["8\n", "٨", "8" * 40])
def test_a_key_that_is_no_long_is_no_agent(key: str) -> None:
    payload = copy.deepcopy(fixture("liveperson_intervals_skills.json"))
    agents = _agent_8(payload)
    agents[key] = agents.pop("8")
    labels = {b.labels for b in parse_engactivity(raw(payload), BY_SKILL_AGENT, TEN - 900, TEN + 300)}
    assert all(dict(lab)["agent"] in {"3", "7", "8"} for lab in labels)
