import gzip
import platform
import zlib
from collections.abc import Iterable
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from aht_exporter import __version__, exposition
from aht_exporter.exposition import (
    KEEP_TEXT,
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Renderer,
    ScrapeTail,
    Segment,
    SourceView,
    _multmodp,
    bodies,
    crc32_combine,
    crc_shift,
    joined,
    render,
)
from aht_exporter.health import SourceHealth
from aht_exporter.model import Bucket, Field, Names, Sums, make_labels
from aht_exporter.store import Snapshot, SourceStore
from aht_exporter.timebuckets import Duration
from tests.helpers import FixedScrapeFamilies, parse_exposition, samples

FIELDS = frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED, Field.TALK_TIME})
VOICE = make_labels(media_type="voice", queue="q1")
EMPTY = make_labels(media_type="chat", queue="q2")


def view(stale: bool = False, name: str = "g1") -> SourceView:
    health = SourceHealth(
        name, "genesys", stale_after=3, up=not stale, polled=True, last_success=1772445000.0, data_end=1772445600
    )
    if stale:
        health.consecutive_failures = 3
    snap = Snapshot(
        data_end=1772445600,
        fields=FIELDS,
        windows={
            "30m": {VOICE: Sums(handle_time_seconds=600.5, contacts_handled=4), EMPTY: Sums(contacts_handled=0)},
            "1h": {VOICE: Sums(handle_time_seconds=900.0, contacts_handled=6, talk_time_seconds=700.25)},
        },
        names=Names(queues={"q1": 'Sales "EU"'}),
    )
    return SourceView(health, snap)


def test_data_series_carry_source_provider_window_and_group_labels() -> None:
    series = parse_exposition(render([view()]).text.decode())
    base = {"source": "g1", "provider": "genesys", "media_type": "voice", "queue": "q1"}
    key = tuple(sorted({**base, "window": "30m"}.items()))
    assert series[("aht_seconds", key)] == 600.5 / 4
    assert series[("aht_handle_time_seconds", key)] == 600.5
    assert series[("aht_contacts_handled", key)] == 4
    assert series[("aht_talk_time_seconds", key)] == 0  # a field the source gives, absent from the bucket: zero
    key1h = tuple(sorted({**base, "window": "1h"}.items()))
    assert series[("aht_seconds", key1h)] == 150.0
    assert series[("aht_talk_time_seconds", key1h)] == 700.25


def test_aht_is_absent_when_no_contact_was_handled() -> None:
    series = parse_exposition(render([view()]).text.decode())
    assert samples(series, "aht_seconds", queue="q2") == {}
    assert list(samples(series, "aht_contacts_handled", queue="q2").values()) == [0]


def test_fields_the_source_does_not_give_are_not_exported() -> None:
    text = render([view()]).text.decode()
    assert "aht_hold_time_seconds" not in text
    assert "aht_contacts_offered" not in text


def test_info_metrics_carry_names_with_escaping() -> None:
    series = parse_exposition(render([view()]).text.decode())
    assert samples(series, "aht_queue_info") == {(("queue", "q1"), ("queue_name", 'Sales "EU"'), ("source", "g1")): 1.0}


def test_a_stale_source_has_its_data_withdrawn_but_keeps_its_health() -> None:
    series = parse_exposition(render([view(stale=True, name="down"), view(name="fine")]).text.decode())
    assert samples(series, "aht_seconds", source="down") == {}
    assert samples(series, "aht_queue_info", source="down") == {}
    assert samples(series, "aht_seconds", source="fine") != {}
    assert list(samples(series, "aht_exporter_source_up", source="down").values()) == [0.0]
    assert list(samples(series, "aht_exporter_source_up", source="fine").values()) == [1.0]


def test_health_metrics_are_all_present() -> None:
    health = SourceHealth("g1", "genesys", 3)
    health.count_request("aggregates", "200")
    health.count_request("token", "error")
    health.count_rate_limited()
    health.record_success(1772445000.0, 0.3, 1772445600)
    health.record_failure(1772445300.0, 12.0, "boom")
    series = parse_exposition(render([SourceView(health, None)]).text.decode())

    def key(**extra: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({"source": "g1", "provider": "genesys", **extra}.items()))

    assert series[("aht_exporter_source_up", key())] == 0
    assert series[("aht_exporter_last_success_timestamp_seconds", key())] == 1772445000.0
    assert series[("aht_exporter_data_end_timestamp_seconds", key())] == 1772445600
    assert series[("aht_exporter_polls_total", key(result="error"))] == 1
    assert series[("aht_exporter_polls_total", key(result="success"))] == 1
    assert series[("aht_exporter_api_requests_total", key(endpoint="aggregates", status="200"))] == 1
    assert series[("aht_exporter_api_requests_total", key(endpoint="token", status="error"))] == 1
    assert series[("aht_exporter_rate_limited_total", key())] == 1
    assert series[("aht_exporter_tokens_issued_total", key())] == 0
    assert series[("aht_exporter_series_dropped_total", key())] == 0
    assert series[("aht_exporter_poll_duration_seconds_count", key())] == 2
    assert series[("aht_exporter_poll_duration_seconds_sum", key())] == 12.3
    assert series[("aht_exporter_poll_duration_seconds_bucket", key(le="0.5"))] == 1
    assert series[("aht_exporter_poll_duration_seconds_bucket", key(le="+Inf"))] == 2
    (build,) = [dict(labels) for name, labels in series if name == "aht_exporter_build_info"]
    assert build == {"version": __version__, "python_version": platform.python_version()}


def test_help_texts_say_scrapes_never_call_the_provider() -> None:
    text = render([view()]).text.decode()
    assert "# HELP aht_seconds Average handle time over the window" in text
    assert "scrapes never call the provider" in text


def test_openmetrics_and_gzip_bodies_say_the_same() -> None:
    tail = ScrapeTail([FixedScrapeFamilies()])  # values that hold still from one body to the next
    rendered = render([view()], tail)
    assert gzip.decompress(rendered.text_gzip) == rendered.text
    assert gzip.decompress(rendered.openmetrics_gzip) == rendered.openmetrics
    om = rendered.openmetrics.decode()
    assert om.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(om)}  # type: ignore[no-untyped-call]
    assert families["aht_exporter_polls"].type == "counter"
    assert families["aht_seconds"].type == "gauge"
    assert om.count("# EOF") == 1
    openmetrics_tail = tail.render(openmetrics=True)
    assert rendered.body(openmetrics=True, gzipped=False) == (
        (*rendered.openmetrics_format.parts, openmetrics_tail),
        OPENMETRICS_CONTENT_TYPE,
    )
    parts, content_type = rendered.body(openmetrics=False, gzipped=True)
    assert (parts[:-1], content_type) == (rendered.text_format.gzip_parts, TEXT_CONTENT_TYPE)


TOKENS_HELP = (
    "Access tokens the provider's token endpoint issued to this source (Ozonetel allows 10 an hour per account)."
)


def test_tokens_issued_are_a_counter_per_source_in_both_formats() -> None:
    ozonetel, genesys = SourceHealth("oz-in", "ozonetel", 3), SourceHealth("g1", "genesys", 3)
    for _ in range(2):
        ozonetel.count_token_issued()
    rendered = render([SourceView(ozonetel, None), SourceView(genesys, None)])
    samples_lines = (
        'aht_exporter_tokens_issued_total{provider="ozonetel",source="oz-in"} 2.0\n'
        'aht_exporter_tokens_issued_total{provider="genesys",source="g1"} 0.0\n'
    )
    text = (
        f"# HELP aht_exporter_tokens_issued_total {TOKENS_HELP}\n"
        "# TYPE aht_exporter_tokens_issued_total counter\n" + samples_lines
    )
    openmetrics = (
        f"# HELP aht_exporter_tokens_issued {TOKENS_HELP}\n# TYPE aht_exporter_tokens_issued counter\n" + samples_lines
    )
    assert text in rendered.text.decode()
    assert openmetrics in rendered.openmetrics.decode()


# --- a poll re-renders only its source (issue 18) ------------------------------------------------------------


def agents_view(name: str, agents: int, handle: float = 100.0) -> SourceView:
    groups: dict[tuple[tuple[str, str], ...], Sums] = {
        make_labels(agent=f"agent-{i:05d}"): Sums(handle_time_seconds=handle + i, contacts_handled=1.0 + i % 7)
        for i in range(agents)
    }
    health = SourceHealth(name, "genesys", 3, up=True, polled=True)
    snap = Snapshot(data_end=1772445600, fields=FIELDS, windows={"30m": groups, "1h": groups})
    return SourceView(health, snap)


def test_a_poll_of_a_small_source_beside_a_big_one_compresses_only_the_small_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renderer = Renderer(ScrapeTail([FixedScrapeFamilies()]))
    big, small = agents_view("big", 5000), agents_view("small", 10)
    first = renderer.render([big, small])

    compressed: list[int] = []
    real = Segment.of_pieces  # every segment is made by it (Segment.of too)

    def counting(pieces: Iterable[bytes]) -> Segment:
        segment = real(pieces)
        compressed.append(segment.size)
        return segment

    monkeypatch.setattr(Segment, "of_pieces", staticmethod(counting))
    polled = agents_view("small", 12, handle=200.0)  # the small source's next poll: a new snapshot
    second = renderer.render([big, polled])

    assert len(first.text) > 1_000_000
    assert compressed
    # The small source's families and the two formats' ends (health, routing): never the big source's lines.
    assert sum(compressed) < len(first.text) // 40, compressed
    for rendered in (first, second):
        for openmetrics in (False, True):
            identity = rendered.openmetrics if openmetrics else rendered.text
            member = rendered.openmetrics_gzip if openmetrics else rendered.text_gzip
            one = zlib.decompressobj(16 + zlib.MAX_WBITS)
            assert one.decompress(member) == identity  # one member, its CRC-32 and length checked
            assert one.eof and one.unused_data == b""
            assert gzip.decompress(member) == identity
    assert b'source="small",window="1h"} 211.0' in second.text  # agent-00011's new handle time


def test_segments_in_any_order_make_one_valid_gzip_member() -> None:
    pieces = [b"", b"a", b"# HELP x y\n", bytes(range(256)) * 300, "é\n".encode()]
    for order in (pieces, pieces[::-1]):
        body = bodies([Segment.of(p) for p in order], b"text end\n", b"om end\n", ScrapeTail([FixedScrapeFamilies()]))
        for cached in (body.text_format, body.openmetrics_format):
            whole = joined(cached.finish(b"tail\n", gzipped=True))
            assert gzip.decompress(whole) == joined(cached.finish(b"tail\n", gzipped=False))


@given(st.lists(st.binary(max_size=3000), max_size=8), st.binary(max_size=100))
def test_the_combined_crc_is_zlibs_over_the_concatenation(pieces: list[bytes], end: bytes) -> None:
    crc = 0
    for piece in pieces:
        crc = crc32_combine(crc, zlib.crc32(piece), crc_shift(len(piece)))
    assert crc == zlib.crc32(b"".join(pieces))
    segments = [Segment.of(p) for p in pieces]
    body = bodies(segments, end, b"om end\n", ScrapeTail([FixedScrapeFamilies()]))
    assert body.text_format.crc == zlib.crc32(b"".join(pieces) + end)
    assert body.text_format.size == sum(map(len, pieces)) + len(end)


@given(st.lists(st.binary(max_size=40_000), max_size=6))
def test_a_segment_made_piece_by_piece_is_the_segment_of_the_pieces_joined(pieces: list[bytes]) -> None:
    # Renderer compresses a family's text one chunk of lines at a time (Segment.of_pieces), never joined whole.
    whole = b"".join(pieces)
    segment, one = Segment.of_pieces(iter(pieces)), Segment.of(whole)
    assert (segment.size, segment.crc, segment.shift, segment.kept) == (one.size, one.crc, one.shift, one.kept)
    assert segment.raw == whole
    assert (segment.kept is None) == (len(whole) >= KEEP_TEXT)
    body = bodies([segment], b"", b"", ScrapeTail([])).text_format
    assert gzip.decompress(joined(body.finish(b"", gzipped=True))) == whole


def test_crc_shift_is_the_power_zlib_would_use_at_any_size() -> None:
    assert crc_shift(0) == 1 << 31  # x^0: multiplying by it changes nothing
    assert crc32_combine(zlib.crc32(b"abc"), zlib.crc32(b"de"), crc_shift(2)) == zlib.crc32(b"abcde")
    zeros = bytes(3 << 20)
    assert crc32_combine(zlib.crc32(b"abc"), zlib.crc32(zeros), crc_shift(len(zeros))) == zlib.crc32(b"abc" + zeros)
    # x^(8(a+b)) = x^(8a) x^(8b), past 32 bits of length too
    for a, b in ((1, 1), (12_345, 678_901), ((1 << 32) + 5, (1 << 33) + 7)):
        assert crc_shift(a + b) == _multmodp(crc_shift(a), crc_shift(b))


def test_a_big_segment_keeps_only_its_deflate_data_and_inflates_to_its_text() -> None:
    text = b"".join(f'aht_seconds{{agent="agent-{i:05d}"}} {i}.5\n'.encode() for i in range(5000))
    segment = Segment.of(text)
    assert segment.kept is None and segment.size == len(text) and len(segment.deflated) < len(text) // 3
    assert segment.raw == text
    small = Segment.of(b"# HELP x y\n")
    assert small.kept == b"# HELP x y\n" and small.raw is small.kept


def test_counters_are_formatted_again_only_when_the_totals_changed() -> None:
    """A snapshot whose totals did not change shares the last one's mapping (the store copies it on write):
    the renderer reuses that source's `_total` segments, and the body is still byte for byte a render from
    scratch; once a bucket is counted, the counters are formatted again."""
    bucket, t0 = 900, 1772445600
    store = SourceStore(bucket=bucket, windows=[Duration.parse("1h")], fields=frozenset(Field), every=300)
    agents = [make_labels(agent=f"a{i:03d}", queue="q1") for i in range(300)]

    def poll(start: int, end: int, handle: float) -> None:
        store.replace(
            start,
            end,
            [
                Bucket(t, t + bucket, labels, {Field.HANDLE_TIME: handle, Field.CONTACTS_HANDLED: 1})
                for t in range(start, end, bucket)
                for labels in agents
            ],
        )

    health = SourceHealth("g1", "genesys", 3, up=True, polled=True)
    renderer = Renderer(ScrapeTail([FixedScrapeFamilies()]))

    def rendered(snap: Snapshot) -> tuple[dict[str, Segment], bytes]:
        body = renderer.render([SourceView(health, snap)]).text
        fresh = Renderer(ScrapeTail([FixedScrapeFamilies()])).render([SourceView(health, snap)]).text
        assert body == fresh
        ((_, segments),) = renderer._samples.values()
        return {f: s for f, s in segments.items() if f.endswith("_total")}, body

    poll(t0 - 3600, t0, 10.0)
    store.finalize(t0 - 3600)
    first = store.snapshot(t0)
    counters, _ = rendered(first)
    assert len(counters) == len(Field)
    poll(t0 - bucket, t0, 20.0)  # a revision inside the window: the windows change, the totals do not
    second = store.snapshot(t0)
    assert second.totals is first.totals and second.windows != first.windows
    again, body = rendered(second)
    assert all(again[f] is counters[f] for f in counters)  # the very segments: not formatted again
    assert b'aht_handle_time_seconds{agent="a000",provider="genesys",queue="q1",source="g1",window="1h"} 50.0' in body
    store.finalize(t0 - 1800)  # two buckets counted: the totals change
    third = store.snapshot(t0)
    assert third.totals is not second.totals
    changed, body = rendered(third)
    assert all(changed[f] is not counters[f] for f in counters)
    assert b'aht_handle_time_seconds_total{agent="a000",provider="genesys",queue="q1",source="g1"} 20.0' in body


def source_samples(view: SourceView) -> dict[str, str]:
    """Each family's lines of `exposition.source_lines`, joined; families with no line left out."""
    texts: dict[str, str] = {}
    ended: set[str] = set()
    for family, lines in exposition.source_lines(view):
        assert family not in ended, f"{family} went on after its end"
        if lines is None:
            ended.add(family)
        else:
            texts[family] = texts.get(family, "") + lines
    assert ended >= set(texts), "every family ends"
    return {family: text for family, text in texts.items() if text}


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_lines_formatted_a_few_at_a_time_make_the_same_bytes(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    # exposition.LINES_AT_ONCE bounds the lists a collection walks; the body is the same at any bound,
    # with a family's lines split across chunks (and AHT lines left out of some: a label set with none handled).
    view = agents_view("g1", 50)
    assert view.snapshot is not None
    snap = replace(
        view.snapshot,
        totals={labels: sums for labels, sums in view.snapshot.windows["30m"].items()},
        names=Names(agents={f"agent-{i:05d}": f"Agent {i}" for i in range(50)}),
    )
    groups = dict(snap.windows["30m"])
    groups[make_labels(agent="idle")] = Sums(contacts_handled=0.0)
    view = SourceView(view.health, replace(snap, windows={**snap.windows, "30m": groups}))
    whole = source_samples(view)
    tail = ScrapeTail([FixedScrapeFamilies()])
    body = Renderer(tail).render([view])
    monkeypatch.setattr(exposition, "LINES_AT_ONCE", step)
    assert source_samples(view) == whole
    assert set(whole) >= {"aht_seconds", "aht_handle_time_seconds_total", "aht_agent_info"}
    # Every family's segment made at once, chunk after chunk (Renderer): the same bodies, and valid gzip.
    stepped = Renderer(tail).render([view])
    assert stepped.text == body.text and stepped.openmetrics == body.openmetrics
    assert gzip.decompress(stepped.text_gzip) == body.text


def test_label_texts_kept_from_the_last_render_make_the_bytes_a_fresh_render_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Renderer keeps each source's label texts (exposition.LabelTexts) for its next render: the body must be
    # byte for byte a fresh renderer's, with label sets come and gone, values that need escaping, a second
    # source with the very same label sets (its own source="..." text), and the counters formatted again.
    def view(name: str, agents: range, handle: float) -> SourceView:
        groups = {
            make_labels(agent=f'a"{i}\\\n', queue=f"q{i % 3}"): Sums(
                handle_time_seconds=handle + i, contacts_handled=2.0
            )
            for i in agents
        }
        health = SourceHealth(name, "genesys", 3, up=True, polled=True)
        return SourceView(health, Snapshot(data_end=1772445600, fields=FIELDS, windows={"1h": groups}, totals=groups))

    renderer = Renderer(ScrapeTail([FixedScrapeFamilies()]))
    renderer.render([view("g1", range(0, 40), 10.0), view("g2", range(0, 40), 10.0)])
    later = [view("g1", range(20, 60), 11.0), view("g2", range(0, 40), 12.0)]
    escaped: list[str] = []
    real = exposition._escape_label_value

    def escape(value: str) -> str:
        escaped.append(value)
        return real(value)

    monkeypatch.setattr(exposition, "_escape_label_value", escape)
    body = renderer.render(later)
    monkeypatch.undo()
    # The 20 label sets new to g1 only, with their 2 values each (and each source's name, provider, window).
    assert len([v for v in escaped if v.startswith(('a"', "q"))]) == 40
    assert body.text == Renderer(ScrapeTail([FixedScrapeFamilies()])).render(later).text
    assert (
        b'aht_handle_time_seconds_total{agent="a\\"59\\\\\\n",provider="genesys",queue="q2",source="g1"} 70.0'
        in body.text
    )
    assert (
        b'aht_handle_time_seconds{agent="a\\"0\\\\\\n",provider="genesys",queue="q0",source="g2",window="1h"} 12.0'
        in body.text
    )
    # Only the label sets of the last snapshot are kept.
    kept = renderer._texts[("g1", "genesys")]
    assert set(kept.before) == set(kept.after) == set(later[0].snapshot.windows["1h"])  # type: ignore[union-attr]


@settings(deadline=None)
@given(st.lists(st.integers(0, 3_600_000), min_size=1, max_size=8), st.integers(0, 40))
def test_a_store_s_millionths_are_written_as_the_same_seconds_would_be(ms: list[int], handled: int) -> None:
    # A SourceStore's snapshot keeps its whole millionths (Snapshot.scale) and each value is divided as its line
    # is written: every line but the AHT is byte for byte that of the same snapshot in seconds.
    s = SourceStore(bucket=1800, windows=[Duration.parse("30m"), Duration.parse("4h")], fields=FIELDS)
    t0 = 1772445600
    s.replace(
        t0 - 1800 * len(ms),
        t0,
        [
            Bucket(
                t0 - 1800 * (i + 1),
                t0 - 1800 * i,
                make_labels(agent="a"),
                {"handle_time_seconds": v / 1000, "contacts_handled": handled},
            )
            for i, v in enumerate(ms)
        ],
    )
    s.finalize(t0 - 3600)
    s.finalize(t0)  # the first call counts nothing: the last two buckets are in the totals
    snap = s.snapshot(t0)
    assert snap.scale == 1_000_000
    health = SourceHealth("g1", "genesys", 3, up=True, polled=True)
    tail = ScrapeTail([FixedScrapeFamilies()])
    body = render([SourceView(health, snap)], tail).text
    aht = [line for line in body.splitlines() if line.startswith(b"aht_seconds{")]
    seconds = render([SourceView(health, snap.in_seconds())], tail).text
    assert [line for line in body.splitlines() if line not in aht] == [
        line for line in seconds.splitlines() if not line.startswith(b"aht_seconds{")
    ]
    assert f'window="4h"}} {sum(ms) / 1000!r}'.encode() in body
    # The AHT is one division of the two whole sums: the exact ratio, correctly rounded (in seconds it was
    # two roundings, then a third, at times one bit off).
    if handled:
        exact = float(Fraction(sum(ms), 1000 * handled * len(ms)))
        assert f'aht_seconds{{agent="a",provider="genesys",source="g1",window="4h"}} {exact!r}'.encode() in aht
    else:
        assert not aht
