"""Time to read Kore.ai Contact Volume replies: each page's bytes to records as the provider reads them, then the
records to buckets.

    python bench/parse_koreai.py [--pages=200] [--page-size=100] [--repeat=5]

The default is the largest reply one fetch reads: MAX_PAGES (200) pages of MAX_PAGE_SIZE (100) records, 20,000
records and about 16 MB of JSON. The records are the vendor's sample record (tests/fixtures) spread over 96
15-minute intervals, 25 queues and 4 sources, every other one leaving out its zero counters and one in 20 with
`queueId: null` (issue 13's sparse shapes), as the simulator serves them.

Run it against another checkout to compare (`PYTHONPATH=/path/to/checkout python bench/parse_koreai.py`): it
imports whatever `aht_exporter` comes first, and reads the bytes with `parse_page_json` where that exists
(msgspec, issue 16) or as the provider did before it (`json_body`, then `parse_page`). The best of `--repeat`
runs is printed, in milliseconds for the whole reply and microseconds per record, with the peak of memory
allocated during one run (tracemalloc); no assertions, the figures are for a person to read.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from aht_exporter.providers import koreai
from aht_exporter.providers.koreai import Record, Rules, latest_revisions, parse_page, parse_record, to_buckets
from aht_exporter.timebuckets import isoformat_z, parse_iso

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "koreai_seed003_response.json"
DAY = int(parse_iso("2023-06-01T00:00:00Z"))
INTERVAL = 900
ZERO_COUNTERS = ("holdDuration", "abandonedContacts", "messageCount", "savedMessageCount", "csatScore")


def reply(pages: int, page_size: int) -> list[bytes]:
    """`pages` pages of `page_size` records, as Kore would send them, paged by skip/limit."""
    sample = json.loads(SAMPLE.read_text())["CallVolumeUpdate"][0]
    records = []
    for n in range(pages * page_size):
        record = copy.deepcopy(sample)
        start = DAY + (n // 100 % 96) * INTERVAL
        record.update(
            _id=f"{n:024x}",
            intervalStartTimeStamp=isoformat_z(start),
            intervalEndTimeStamp=isoformat_z(start + INTERVAL),
            queueId=None if n % 20 == 0 else f"qu-{n % 25:04d}",
            queueName=f"Queue {n % 25}",
            source=("rtm", "voice", "email", "sms")[n % 4],
            conversationHandleTime=60_000 + n % 5_000,
            completedContacts=1 + n % 3,
        )
        record["holdDuration"] = 0
        if n % 2:
            for key in ZERO_COUNTERS:
                record.pop(key, None)
        records.append(record)
    total = len(records)
    return [
        json.dumps(
            {
                "hasMore": skip + page_size < total,
                "CallVolumeUpdate": records[skip : skip + page_size],
                "totalCount": total,
            }
        ).encode()
        for skip in range(0, total, page_size)
    ]


def read_pages(bodies: list[bytes], rules: Rules) -> Callable[[], list[Record]]:
    """The provider's reading of each page: the bytes as received, to its records."""
    responses = [httpx.Response(200, content=body) for body in bodies]
    from_bytes = getattr(koreai, "parse_page_json", None)

    def run() -> list[Record]:
        records: list[Record] = []
        for response in responses:
            if from_bytes is not None:
                page = from_bytes(response.content, skip=len(records), status=response.status_code)
            else:  # before issue 16: the stdlib's json, then the walkers
                from aht_exporter.httpclient import json_body

                page = parse_page(json_body(response, "callvolume"))
            offset = len(records)
            records.extend(parse_record(raw, offset + i, rules) for i, raw in enumerate(page.records))
        return records

    return run


def best(run: Callable[[], Any], repeat: int) -> tuple[float, int]:
    """The fastest of `repeat` runs, and the peak of memory allocated during one more (traced) run."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return min(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    bodies = reply(args.pages, args.page_size)
    rules = Rules(bucket=INTERVAL)
    records = read_pages(bodies, rules)()
    n = len(records)
    how = "msgspec (parse_page_json)" if hasattr(koreai, "parse_page_json") else "json_body + parse_page"
    print(f"{n} records in {len(bodies)} pages, {sum(map(len, bodies)) / 1e6:.1f} MB of JSON; read by {how}")
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("bytes -> records", read_pages(bodies, rules)),
        ("records -> buckets", lambda: to_buckets(latest_revisions(records), DAY, DAY + 86_400, INTERVAL)),
    ]
    for name, run in cases:
        seconds, peak = best(run, args.repeat)
        print(f"  {name:20} {seconds * 1e3:8.1f} ms  {seconds / n * 1e6:6.2f} us/record  peak {peak / 1e6:6.1f} MB")


if __name__ == "__main__":
    main()
