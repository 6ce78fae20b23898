import pytest

from aht_exporter.timebuckets import (
    MAX_DURATION_DIGITS,
    Duration,
    chunks,
    closed_until,
    fetch_span,
    format_duration,
    isoformat_z,
    parse_iso,
    poll_boundary,
)
from tests.helpers import T0

H = 3600
M = 60


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("2w", 14 * 86400), ("0s", 0)],
)
def test_duration_parses_prometheus_syntax(text: str, seconds: int) -> None:
    d = Duration.parse(text)
    assert d.seconds == seconds
    assert d.text == text


@pytest.mark.parametrize("text", ["", "5", "5 m", "1.5h", "m", "-5m", "5M", "1m1h"])
def test_duration_rejects_what_prometheus_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        Duration.parse(text)


def test_format_duration_is_the_shortest_text() -> None:
    assert format_duration(5400) == "1h30m"
    assert format_duration(1800) == "30m"
    assert format_duration(86400) == "1d"
    assert format_duration(0) == "0s"


def test_poll_boundary_is_newest_multiple_of_every_with_delay_passed() -> None:
    ten = 1772445600  # 2026-03-02T10:00:00Z
    assert poll_boundary(ten + 7 * M, 5 * M, 1 * M) == ten + 5 * M
    assert poll_boundary(ten + 6 * M, 5 * M, 1 * M) == ten + 5 * M  # exactly B + delay
    assert poll_boundary(ten + 6 * M - 1, 5 * M, 1 * M) == ten  # one second before: previous boundary
    assert poll_boundary(ten + 59 * M, H, 4 * M) == ten


def test_closed_until_ignores_the_bucket_in_progress() -> None:
    ten = 1772445600
    assert closed_until(ten + 5 * M, 30 * M) == ten  # 10:00-10:30 is still open at 10:05
    assert closed_until(ten + 30 * M, 30 * M) == ten + 30 * M  # closed exactly at its end


def test_first_poll_backfills_the_longest_window() -> None:
    end = 1772445600
    assert fetch_span(end, bucket=1800, longest_window=86400, refresh=7200, every=300, fetched_until=None) == (
        end - 86400,
        end,
    )


def test_later_poll_refetches_only_the_refresh_span() -> None:
    end = 1772445600
    span = fetch_span(end, bucket=1800, longest_window=86400, refresh=7200, every=300, fetched_until=end)
    assert span == (end - 7200, end)


def test_refresh_is_rounded_up_to_whole_buckets() -> None:
    end = 1772445600
    span = fetch_span(end, bucket=1800, longest_window=86400, refresh=3000, every=1800, fetched_until=end)
    assert span == (end - 3600, end)


def test_poll_after_failures_reaches_back_to_what_was_fetched() -> None:
    end = 1772445600
    span = fetch_span(end, bucket=1800, longest_window=86400, refresh=3600, every=1800, fetched_until=end - 5 * H)
    # The first missed poll (at end - 4.5h) would have re-fetched an hour back from there.
    assert span == (end - 5 * H - 1800, end)


def test_a_missed_poll_leaves_its_refresh_span_to_the_next_one() -> None:
    """Missed at 10:05, the poll at 10:10 re-fetches what 10:05 would have (from 09:05), not only from
    09:10: a revision of the 09:05 bucket made before 10:05 is seen before that bucket is final."""
    end = 1772446200  # 10:10
    span = fetch_span(end, bucket=300, longest_window=86400, refresh=3600, every=300, fetched_until=end - 600)
    assert span == (end - 3600 - 300, end)
    span = fetch_span(end, bucket=300, longest_window=86400, refresh=3600, every=300, fetched_until=end - 300)
    assert span == (end - 3600, end)  # none missed: the refresh span alone


def test_fetch_never_reaches_beyond_the_longest_window() -> None:
    end = 1772445600
    span = fetch_span(end, bucket=1800, longest_window=3600, refresh=7200, every=300, fetched_until=end - 10 * H)
    assert span == (end - 3600, end)


def test_chunks_cover_the_span_without_overlap() -> None:
    assert chunks(0, 100, 30) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert chunks(0, 0, 30) == []


def test_iso_round_trip_with_millis_and_z() -> None:
    assert isoformat_z(T0) == "2026-03-02T10:07:00.000Z"
    assert parse_iso("2026-03-02T10:07:00.000Z") == T0
    assert parse_iso("2026-03-02T10:07:00Z") == T0
    assert parse_iso("2026-03-02T10:07:00") == T0


def test_milliseconds_are_for_timeouts() -> None:
    d = Duration.parse("1500ms")
    assert (d.millis, d.seconds, d.total_seconds) == (1500, 1, 1.5)
    assert Duration.parse("1m30s").millis == 90_000
    assert Duration.parse("2s500ms").total_seconds == 2.5


def test_duration_refuses_a_number_of_more_than_ten_digits() -> None:
    # Issue 12: `every: 100000000000000000000d` parsed into a big int that overflowed the scheduler.
    assert MAX_DURATION_DIGITS == 10
    with pytest.raises(ValueError, match=r"^'100000000000000000000d' has a number of more than 10 digits$"):
        Duration.parse("100000000000000000000d")
    with pytest.raises(ValueError, match="more than 10 digits"):
        Duration.parse("1h99999999999999999999999m")
    assert Duration.parse("9999999999ms").millis == 9_999_999_999


def test_the_longest_duration_the_syntax_takes_fits_64_bits() -> None:
    longest = Duration.parse("9999999999w9999999999d9999999999h9999999999m9999999999s9999999999ms")
    assert longest.millis < 2**63


def test_a_long_text_is_quoted_short_in_the_error() -> None:
    with pytest.raises(ValueError) as info:
        Duration.parse("5" * 1_000_000)
    assert len(str(info.value)) < 120
    assert str(info.value).startswith("'5555")
