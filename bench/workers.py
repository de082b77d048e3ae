"""``serve`` (one process) against ``serve --workers 2``, the same traffic in the same run
(:func:`bench.ingest.workers_vs_one`): what collecting on every core buys on this machine."""

from __future__ import annotations

from typing import Any

from bench.ingest import workers_vs_one


def run(events: int) -> dict[str, Any]:
    return workers_vs_one(events, workers=2)


def render(results: dict[str, Any]) -> str:
    r = results["workers"]
    one = r["one"]
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores; {one['events']:,} "
        f"events in {one['batch_size']}-event batches from {one['client_processes']} client "
        "processes (16 keep-alive connections each) on the same machine.",
        "",
        "| server | acked events/s | loaded (end to end) events/s | vs one process "
        "(acked / loaded) | events per worker | balanced |",
        "|---|---|---|---|---|---|",
        f"| `serve` (one process) | {one['acked_events_per_s']:,} | "
        f"{one['end_to_end_events_per_s']:,} | — | — | {'yes' if one['balanced'] else 'NO'} |",
    ]
    for balance in ("reuseport", "accept"):
        x = r[balance]
        split = " / ".join(f"{n:,}" for n in x["events_per_worker"])
        lines.append(
            f"| `serve --workers {x['collect_workers']} --balance {balance}` | "
            f"{x['acked_events_per_s']:,} | {x['end_to_end_events_per_s']:,} | "
            f"{x['ratio_acked']:.2f}x / {x['ratio_loaded']:.2f}x | {split} | "
            f"{'yes' if x['balanced'] else 'NO'} |"
        )
    return "\n".join(lines)
