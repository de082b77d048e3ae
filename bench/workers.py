"""``serve`` (one process) against ``serve --workers 2``, the same traffic in the same run
(:func:`bench.ingest.workers_vs_one`): what collecting on every core buys on this machine."""

from __future__ import annotations

from typing import Any

from bench.ingest import workers_vs_one


def run(events: int) -> dict[str, Any]:
    return workers_vs_one(events, workers=2)


def render(results: dict[str, Any]) -> str:
    r = results["workers"]
    one, many = r["one"], r["workers"]
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores; {one['events']:,} "
        f"events in {one['batch_size']}-event batches from {one['client_processes']} client "
        "processes (16 keep-alive connections each) on the same machine.",
        "",
        "| server | acked events/s | loaded (end to end) events/s | balanced |",
        "|---|---|---|---|",
    ]
    for x, label in ((one, "`serve` (one process)"), (many, "`serve --workers 2`")):
        lines.append(
            f"| {label} | {x['acked_events_per_s']:,} | {x['end_to_end_events_per_s']:,} | "
            f"{'yes' if x['balanced'] else 'NO'} |"
        )
    lines.append(f"| ratio | {r['ratio_acked']:.2f}x | {r['ratio_loaded']:.2f}x | |")
    return "\n".join(lines)
