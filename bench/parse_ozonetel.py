"""Time to read Ozonetel AHT replies: the body decoded as the provider does (json_body), then reply_error and
parse_aht_reply, per reply.

    python bench/parse_ozonetel.py [--replies=20000] [--extra=20000] [--repeat=5]

An Ozonetel reply is one target's AHT, so a poll reads many small replies rather than one large one. Two cases:

- `typical`: the documented success reply ({"status", "message": {"AgentID", "AgentName", "AHT"}}), `--replies`
  of them, one per agent;
- `large`: one success reply whose `message` also carries `--extra` keys the exporter does not read (a vendor
  that starts sending a report's worth of fields), about 1 MB of JSON at the default.

Run it against another checkout to compare (`PYTHONPATH=/path/to/checkout python bench/parse_ozonetel.py`):
it imports whatever `aht_exporter` comes first. The best of `--repeat` runs is printed, in microseconds per
reply; no assertions, the figures are for a person to read.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import httpx

from aht_exporter.httpclient import json_body
from aht_exporter.providers.ozonetel import Target, parse_aht_reply, reply_error


def typical(n: int) -> list[tuple[bytes, Target]]:
    replies = []
    for i in range(n):
        message = {"AgentID": f"agent{i}", "AgentName": f"Agent Number {i}", "AHT": f"00:{i % 60:02d}:{i % 59:02d}"}
        replies.append((json.dumps({"status": "success", "message": message}).encode(), Target("agent", f"agent{i}")))
    return replies


def large(extra: int) -> list[tuple[bytes, Target]]:
    message: dict[str, object] = {f"Field{i}": {"value": i, "text": f"t{i}"} for i in range(extra)}
    message.update({"AgentID": "a1", "AgentName": "Asha Rao", "AHT": "00:02:37"})
    return [(json.dumps({"status": "success", "message": message}).encode(), Target("agent", "a1"))]


def read_all(replies: list[tuple[bytes, Target]]) -> Callable[[], None]:
    """The provider's whole reading of each reply: JSON decoding, then the checks."""
    responses = [(httpx.Response(200, content=body), target) for body, target in replies]

    def run() -> None:
        for response, target in responses:
            payload = json_body(response, "aht")
            assert reply_error(payload, "aht") is None
            parse_aht_reply(payload, target, "aht")

    return run


def check_all(replies: list[tuple[bytes, Target]]) -> Callable[[], None]:
    """The checks alone, on replies decoded beforehand: what this module's parsers cost."""
    payloads = [(json.loads(body), target) for body, target in replies]

    def run() -> None:
        for payload, target in payloads:
            assert reply_error(payload, "aht") is None
            parse_aht_reply(payload, target, "aht")

    return run


def best(run: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=20000)
    parser.add_argument("--extra", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'case':<10} {'replies':>8} {'bytes each':>11} {'us per reply, decoded+checked':>30} {'checks only':>12}")
    for name, replies in (("typical", typical(args.replies)), ("large", large(args.extra))):
        # httpx caches a response's decoded text: every run gets fresh responses, built outside the timing.
        whole = min(best(run, 1) for run in [read_all(replies) for _ in range(args.repeat)])
        checks = best(check_all(replies), args.repeat)
        size = sum(len(body) for body, _ in replies) // len(replies)
        per = [f"{seconds / len(replies) * 1e6:.2f}" for seconds in (whole, checks)]
        print(f"{name:<10} {len(replies):>8} {size:>11} {per[0]:>30} {per[1]:>12}")


if __name__ == "__main__":
    main()
