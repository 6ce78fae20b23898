"""The Genesys reply is decoded a slice of results at a time (`genesys.DECODE_SLICE`), so that no one msgspec
call holds the GIL for the whole of a 6 MB reply: the same buckets as one decode, and the same errors, with
the path in the whole reply."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable

import msgspec
import pytest

from aht_exporter.model import Field, ProviderError
from aht_exporter.providers import genesys
from aht_exporter.providers.genesys import parse_aggregates_json
from aht_exporter.store import SourceStore
from aht_exporter.timebuckets import Duration
from tests.helpers import fixture

GROUP_BY = ["agent", "media_type"]


def whole(raw: bytes) -> list[object]:
    """The buckets as one decode of the whole reply makes them (the way before slices)."""
    return genesys._reply_buckets(genesys._DECODER.decode(raw), GROUP_BY)  # type: ignore[return-value]


def many_results(n: int) -> bytes:
    """The SDK's sample reply, its results repeated under n distinct agents."""
    sample = fixture("genesys_sdk_aggregates_agent.json")
    results = []
    for i in range(n):
        for result in sample["results"]:
            results.append({**result, "group": {**result["group"], "userId": f"agent-{i:05d}"}})
    return json.dumps({"results": results}).encode()


@pytest.mark.parametrize("slice_bytes", [1, 700, 10_000, genesys.DECODE_SLICE])
def test_slices_give_the_buckets_of_one_decode(monkeypatch: pytest.MonkeyPatch, slice_bytes: int) -> None:
    raw = many_results(300)
    monkeypatch.setattr(genesys, "DECODE_SLICE", slice_bytes)
    got = parse_aggregates_json(raw, GROUP_BY)
    intervals = sum(len(r["data"]) for r in fixture("genesys_sdk_aggregates_agent.json")["results"])
    assert len(got) == 300 * intervals
    assert got == whole(raw)


def test_a_slice_really_is_decoded_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = many_results(50)
    calls: list[int] = []
    real = genesys._RESULTS

    class Counting:
        def decode(self, data: bytes) -> object:
            calls.append(len(data))
            return real.decode(data)

    monkeypatch.setattr(genesys, "_RESULTS", Counting())
    monkeypatch.setattr(genesys, "DECODE_SLICE", 2_000)
    parse_aggregates_json(raw, GROUP_BY)
    assert len(calls) > 10
    assert max(calls) < 2_000 + 2 * len(raw) // 100  # a slice ends at the first result past the bound


def test_an_error_in_a_later_slice_names_its_path_in_the_whole_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = json.loads(many_results(40))
    reply["results"][57]["data"][0]["interval"] = 17
    raw = json.dumps(reply).encode()
    monkeypatch.setattr(genesys, "DECODE_SLICE", 1_000)
    with pytest.raises(ProviderError) as caught:
        parse_aggregates_json(raw, GROUP_BY)
    assert str(caught.value) == "aggregates response: Expected `str`, got `int` - at `$.results[57].data[0].interval`"


def test_results_not_a_list_and_error_bodies_read_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(genesys, "DECODE_SLICE", 1)
    with pytest.raises(ProviderError) as caught:
        parse_aggregates_json(b'{"results": {"a": 1}}', GROUP_BY)
    assert str(caught.value) == "aggregates response: Expected `array`, got `object` - at `$.results`"
    body = b'{"code": "bad.request", "message": "nope", "contextId": "c-1"}'
    with pytest.raises(ProviderError) as caught:
        parse_aggregates_json(body, GROUP_BY)
    assert str(caught.value) == "aggregates response: the vendor answered 200 with an error: bad.request: nope (c-1)"
    assert parse_aggregates_json(b"{}", GROUP_BY) == []
    assert parse_aggregates_json(b'{"results": []}', GROUP_BY) == []
    with pytest.raises(ProviderError) as caught:
        parse_aggregates_json(b'{"results": [{"group": {}, ', GROUP_BY)
    assert str(caught.value) == """aggregates query: response is not JSON (HTTP 200, '{"results": [{"group": {}, ')"""
    with pytest.raises(ProviderError, match="nested too deeply"):
        parse_aggregates_json(b'{"results": [{"group": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}]}", GROUP_BY)
    scanned = genesys._SCANNER.decode(b'{"results": [1, "x"]}').results
    assert isinstance(scanned, list)
    assert [bytes(r) for r in scanned] == [b"1", b'"x"']
    assert all(isinstance(r, msgspec.Raw) for r in scanned)


def test_what_a_big_poll_holds_is_not_walked_by_the_garbage_collector() -> None:
    """A full collection during a 100k-agent poll walked every bucket (a dataclass) and its values dict (a
    `Field` key keeps a dict tracked). Buckets are untracked msgspec Structs now, their values are keyed by
    the plain str, the store's and the snapshot's per-label-set values are untracked `Sums`, and the dicts
    of them are untracked after a collection: the collector leaves all of them alone (docs/performance.md,
    "Event-loop stalls" and "Values the collector never walks")."""
    buckets = parse_aggregates_json(many_results(50), GROUP_BY)
    assert buckets and not any(gc.is_tracked(b) or gc.is_tracked(b.values) for b in buckets)
    assert all(v == b.values[Field(k)] for b in buckets for k, v in b.values.items())  # a Field finds each
    start = min(b.start for b in buckets)
    end = max(b.end for b in buckets)
    size = buckets[0].end - buckets[0].start
    store = SourceStore(bucket=size, windows=[Duration.parse("1d")], fields=genesys.fields_for(GROUP_BY))
    store.replace(start, end, buckets)
    store.finalize(start)
    snap = store.snapshot(end)
    held: list[object] = [*(v for groups in store._buckets.values() for v in groups.values()), *store.totals.values()]
    held += [t for window in snap.windows.values() for t in window.values()] + list(snap.totals.values())
    assert held and not any(gc.is_tracked(d) for d in held)
    # And the big dicts that hold them, one entry per label set: a dict of dicts is never untracked, and every
    # full collection walked each of its entries (50 to 70 ms at 100k agents). Each value is a `Sums` now,
    # which the collector does not know, and the label sets are tuples of str, which it untracks (a tuple
    # once the tuples in it are, so a label set may take a collection per level of nesting; a dict at a
    # full collection once its keys are): after that, no collection walks these dicts again.
    for _ in range(3):
        gc.collect()
    big = [*store._buckets.values(), store.totals, store._shown, *snap.windows.values(), snap.totals]
    assert all(len(d) > 1 for d in big)
    assert [gc.is_tracked(d) for d in big] == [False] * len(big)


class NoScan:
    """In place of the scanner: counts the replies that were scanned whole."""

    def __init__(self) -> None:
        self.scanned = 0

    def decode(self, data: bytes) -> object:
        self.scanned += 1
        return _SCANNER_REAL.decode(data)


_SCANNER_REAL = genesys._SCANNER


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":"), None])
def test_a_reply_of_results_alone_is_cut_between_results_and_never_scanned_whole(
    monkeypatch: pytest.MonkeyPatch, separators: tuple[str, str] | None
) -> None:
    """Scanning a 30 MB reply whole was one msgspec call of 31 ms with the GIL held: a reply that is
    `{"results": [...]}` alone, as Genesys writes it (compact, spaced or indented), is cut where one result
    ends and the next begins, and each slice decoded."""
    reply = json.loads(many_results(60))
    raw = json.dumps(reply, separators=separators, indent=None if separators else 1).encode()
    scanner, calls = NoScan(), []
    real = genesys._RESULTS

    class Counting:
        def decode(self, data: bytes) -> object:
            calls.append(data)
            return real.decode(data)

    monkeypatch.setattr(genesys, "_SCANNER", scanner)
    monkeypatch.setattr(genesys, "_RESULTS", Counting())
    monkeypatch.setattr(genesys, "DECODE_SLICE", 2_000)
    assert parse_aggregates_json(raw, GROUP_BY) == whole(raw)
    assert scanner.scanned == 0
    assert len(calls) > 10 and all(c[1:].lstrip().startswith(b"{") and c[:-1].rstrip().endswith(b"}") for c in calls)
    assert parse_aggregates_json(b' {"results" : [ ] }\n', GROUP_BY) == [] and scanner.scanned == 0


def with_group_in_each_entry(raw: bytes) -> bytes:
    reply = json.loads(raw)
    for result in reply["results"]:
        result["data"] = [{"group": {"userId": "not here"}, **entry} for entry in result["data"]]
    return json.dumps(reply).encode()


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda raw: raw[:-1] + b', "more": 1}', "another key after the results"),
        (lambda raw: b'{"more": 1, ' + raw[1:], "another key before them"),
        (with_group_in_each_entry, 'a "group" key in every entry: the boundary is found inside a result'),
    ],
)
def test_a_reply_that_does_not_cut_into_whole_results_is_scanned_and_reads_the_same(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[bytes], bytes], why: str
) -> None:
    raw = make(many_results(40))
    scanner = NoScan()
    monkeypatch.setattr(genesys, "_SCANNER", scanner)
    monkeypatch.setattr(genesys, "DECODE_SLICE", 1_000)
    assert parse_aggregates_json(raw, GROUP_BY) == whole(raw), why
    assert scanner.scanned == 1, why


@pytest.mark.parametrize(
    "raw",
    [
        b'{"results": [{"group": {}, "data": []}\x0c, {"group": {}, "data": []}]}',  # \f: not JSON's whitespace
        b'{\x0c"results": []}',
        b'{"results": [{"group": {}, "data": []}]]}',
        b'{"results": [}',
    ],
)
def test_what_is_not_json_between_or_around_the_results_is_still_not_json(
    monkeypatch: pytest.MonkeyPatch, raw: bytes
) -> None:
    monkeypatch.setattr(genesys, "DECODE_SLICE", 1)
    with pytest.raises(ProviderError, match="response is not JSON"):
        parse_aggregates_json(raw, GROUP_BY)


@pytest.mark.parametrize("scanned", [False, True])
def test_each_slice_of_results_is_made_into_buckets_and_let_go_before_the_next_is_decoded(
    monkeypatch: pytest.MonkeyPatch, scanned: bool
) -> None:
    """Freeing the decoded results of a 100,000-agent reply all at once, when the parse returned, held the
    GIL for 35 to 40 ms: the event loop's longest stall at that size. A slice's results are gone before the
    slice but one is decoded (the one before is still being read then), on the path that cuts the reply and on
    the one that scans it."""
    raw = many_results(60)
    if scanned:
        raw = raw[:-1] + b', "more": 1}'  # another key: the reply is scanned
    firsts: list[object] = []  # the first result of each slice decoded so far
    real = genesys._RESULTS

    class Watching:
        def decode(self, data: bytes) -> object:
            # Held by `firsts` and by getrefcount's argument alone (2): nothing else has it any more.
            held = [sys.getrefcount(firsts[n]) > 2 for n in range(len(firsts) - 1)]
            assert not any(held), f"{held.count(True)} earlier slices still alive"
            got = real.decode(data)
            firsts.append(got[0])
            return got

    monkeypatch.setattr(genesys, "_RESULTS", Watching())
    monkeypatch.setattr(genesys, "DECODE_SLICE", 2_000)
    assert parse_aggregates_json(raw, GROUP_BY) == whole(raw)
    assert len(firsts) > 10
