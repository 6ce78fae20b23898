"""LivePerson reply parsing: the time and memory from an engactivity body's bytes to buckets.

    python bench/parse_liveperson.py [--intervals 288] [--skills 20] [--agents 400] [--skills-per-agent 2]

One large reply, built with a seeded generator in the shape of LivePerson's examples: `--intervals` 5-minute
intervals (288: the 24 hours a first poll or a backfill may ask for), each with every agent's cell in each of
its skills (the skills block broken down per agent [doc]), the per-skill totals, the agents block and the
totals, plus the interval still filling. It is parsed as the provider parses it (`parse_engactivity` on the
body's bytes) at each grain, `--repeat` times: the best and the median time, and the peak of memory allocated
while parsing (tracemalloc, one run of its own, since tracing slows the code down).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
import tracemalloc

from common import Result

from aht_exporter.providers.liveperson import Selection, parse_engactivity

END = 1772445600  # 2026-03-02 10:00 UTC: the span asked for ends here
KEYS = (
    "totalInteractiveChats",
    "totalNonInteractiveChats",
    "totalHandlingTime",
    "nonInteractiveTotalHandlingTime",
    "connectedEngagements",
)


def reply(intervals: int, skills: int, agents: int, per_agent: int, seed: int = 16) -> bytes:
    rng = random.Random(seed)
    skill_ids = [str(1000 + s) for s in range(skills)]
    membership = {str(4_000_000_000 + a): rng.sample(skill_ids, min(per_agent, skills)) for a in range(agents)}

    def cell() -> dict[str, int]:
        chats = rng.randint(0, 6)
        return {
            "totalInteractiveChats": chats,
            "totalNonInteractiveChats": rng.randint(0, 1),
            "totalHandlingTime": sum(rng.randint(60, 1500) for _ in range(chats)),
            "nonInteractiveTotalHandlingTime": rng.randint(0, 30),
            "connectedEngagements": chats + rng.randint(0, 1),
        }

    def total(cells: list[dict[str, int]]) -> dict[str, int]:
        return {key: sum(c[key] for c in cells) for key in KEYS}

    entries = []
    for i in range(intervals + 1):  # the newest one still filling
        per_skill: dict[str, dict[str, dict[str, int]]] = {s: {} for s in skill_ids}
        per_agent_cells: dict[str, list[dict[str, int]]] = {}
        for agent, own in membership.items():
            for skill in own:
                per_skill[skill][agent] = c = cell()
                per_agent_cells.setdefault(agent, []).append(c)
        everything = [c for cells in per_agent_cells.values() for c in cells]
        entries.append(
            {
                "timestamp": (END + 300 - 300 * i) * 1000,
                "metricsData": {
                    "skillsMetricsPerAgent": {
                        "metricsPerSkill": {
                            s: {"metricsPerAgent": cells, "metricsTotals": total(list(cells.values()))}
                            for s, cells in per_skill.items()
                            if cells
                        },
                        "metricsTotals": total(everything),
                    },
                    "agentsMetrics": {
                        "metricsPerAgent": {a: total(cs) for a, cs in per_agent_cells.items()},
                        "metricsTotals": total(everything),
                    },
                    "metricsTotals": total(everything),
                },
            }
        )
    return json.dumps({"metricsByIntervals": entries}).encode()


GRAINS: dict[str, Selection] = {
    "skill (the default)": Selection(("queue",)),
    "skill and agent": Selection(("queue", "agent")),
    "agent": Selection(("agent",)),
    "account": Selection(()),
}


def measure(body: bytes, selection: Selection, start: int, repeat: int) -> tuple[list[float], int, float]:
    times = []
    count = 0
    for _ in range(repeat):
        gc.collect()
        began = time.perf_counter()
        count = len(parse_engactivity(body, selection, start, END))
        times.append(time.perf_counter() - began)
    gc.collect()
    tracemalloc.start()
    parse_engactivity(body, selection, start, END)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return times, count, peak / 2**20


def main(args: argparse.Namespace) -> Result:
    body = reply(args.intervals, args.skills, args.agents, args.skills_per_agent)
    start = END - 300 * args.intervals
    cells = args.intervals * args.agents * min(args.skills_per_agent, args.skills)
    result = Result(
        title="LivePerson: engactivity bytes to buckets",
        command=(
            f"python bench/parse_liveperson.py --intervals {args.intervals} --skills {args.skills} "
            f"--agents {args.agents} --skills-per-agent {args.skills_per_agent} --repeat {args.repeat}"
        ),
        columns=["grain", "best ms", "median ms", "peak MiB", "buckets"],
        notes=[
            f"one reply of {len(body) / 2**20:.1f} MiB: {args.intervals} closed intervals, {cells:,} agent cells",
        ],
    )
    for name, selection in GRAINS.items():
        times, count, peak = measure(body, selection, start, args.repeat)
        result.rows.append(
            [name, f"{min(times) * 1000:.0f}", f"{statistics.median(times) * 1000:.0f}", f"{peak:.0f}", f"{count:,}"]
        )
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--intervals", type=int, default=288)
    p.add_argument("--skills", type=int, default=20)
    p.add_argument("--agents", type=int, default=400)
    p.add_argument("--skills-per-agent", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    return p


if __name__ == "__main__":
    print(main(parser().parse_args()).text())
