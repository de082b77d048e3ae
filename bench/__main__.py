"""``python -m bench``: run the benchmarks, save JSON, refresh the tables in BENCHMARKS.md."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def render(results: dict[str, Any]) -> str:
    e2e, ld, pg, lat = (results.get(k, {}) for k in ("ingest", "loader", "pg_baseline", "latency"))
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores "
        f"({results['machine']['cpu']}), Python {results['machine']['python']}.",
        "",
        "| measure | Gristmill | baseline (same run) | ratio |",
        "|---|---|---|---|",
    ]
    if e2e:
        lines.append(
            f"| (a) HTTP ingest, {e2e['batch_size']}-event batches, durable then loaded | "
            f"{e2e['end_to_end_events_per_s']:,} events/s (acked {e2e['acked_events_per_s']:,}/s) "
            f"| — | — |"
        )
    if ld:
        lines.append(
            f"| (b) loader vs raw DuckDB Arrow append, {ld['events']:,} events | "
            f"{ld['loader_rows_per_s']:,} rows/s | {ld['raw_arrow_append_rows_per_s']:,} rows/s "
            f"| {ld['ratio_loader_to_raw']:.0%} |"
        )
    if e2e and pg and "rows_per_s" in pg:
        lines.append(
            f"| (c) end to end vs one INSERT per event into PostgreSQL (seed 001 style) | "
            f"{e2e['end_to_end_events_per_s']:,} events/s | {pg['rows_per_s']:,} rows/s | "
            f"{e2e['end_to_end_events_per_s'] / pg['rows_per_s']:.1f}x |"
        )
    elif pg:
        lines.append(f"| (c) PostgreSQL baseline | — | {pg.get('skipped')} | — |")
    if lat:
        lines.append(
            f"| (d) 2xx to queryable at {lat['background_events_per_s']:,} events/s background "
            f"({lat.get('background_sent_per_s', 0):,}/s sent) "
            f"| p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, max {lat['max_ms']} ms "
            f"({lat['probes']} probes) | — | — |"
        )
    fixed = results.get("latency_fixed_wait")
    if fixed:
        lines.append(
            f"| (d') the same with the fixed 0.2 s batch wait (`adaptive_wait=false`) "
            f"| p50 {fixed['p50_ms']} ms, p95 {fixed['p95_ms']} ms, max {fixed['max_ms']} ms "
            f"({fixed['probes']} probes) | — | adaptive p95 / fixed p95: "
            f"{lat['p95_ms'] / fixed['p95_ms']:.0%} |"
        )
    return "\n".join(lines)


def render_analytics(results: dict[str, Any]) -> str:
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores.",
        "",
        "| events | view | rollup p50 / p95 | raw rows p50 / p95 | speedup p50 |",
        "|---|---|---|---|---|",
    ]
    for r in results["analytics"]:
        for view in ("vendor_analytics", "admin_analytics"):
            v = r[view]
            lines.append(
                f"| {r['events']:,} | {view} | {v['rollup_p50_ms']} / "
                f"{v['rollup_p95_ms']} ms | {v['raw_p50_ms']} / {v['raw_p95_ms']} ms "
                f"| {v['speedup_p50']}x |"
            )
    lines += [
        "",
        "| events in the warehouse | full rollup rebuild | refresh per 1M new events, "
        "in time order | refresh per 1M late events (3 days back) | max RSS | DuckDB file |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["analytics"]:
        lines.append(
            f"| {r['events']:,} | {r['rollup_full_rebuild_s']} s | "
            f"{r['refresh_in_order']['rollup_and_freshness_refresh_s']} s | "
            f"{r['refresh_late_3d']['rollup_and_freshness_refresh_s']} s | "
            f"{r['max_rss_mb']} MB | {r['warehouse_mb']} MB |"
        )
    return "\n".join(lines)


def render_dialects(results: dict[str, Any]) -> str:
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores.",
        "",
        "| dialect | bytes/event | collector alone | 100-event batches over HTTP (median) "
        "| runs | vs native | single-event requests |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["dialects"].items():
        runs = " / ".join(f"{x / 1000:.1f}k" for x in r["batched_runs"])
        lines.append(
            f"| {name} | {r['wire_bytes_per_event']} | {r['parse_events_per_s']:,} events/s "
            f"| {r['batched_events_per_s']:,} events/s | {runs} | "
            f"{r['vs_native_batched']:.0%} | {r['single_requests_per_s']:,} req/s |"
        )
    return "\n".join(lines)


def update_markdown(section: str, text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = f"{start}\n{text}\n{end}"
    if start in doc:
        doc = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc += f"\n{block}\n"
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--pg-events", type=int, default=20_000)
    ap.add_argument("--latency-rate", type=int, default=20_000)
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument(
        "--only",
        default=(
            "ingest,loader,pg_baseline,latency,analytics,dialects,relay,warehouses,feeds,sources,"
            "governance,enrichment,usage,rollups,peers,frames,provision,delivery,workers,servers,"
            "dedupe,single"
        ),
    )
    ap.add_argument("--feed-rows", default="250000,1000000", help="Sales CSV sizes (feeds).")
    ap.add_argument(
        "--scales", default="10000000,100000000", help="Event counts for the analytics section."
    )
    ap.add_argument("--wh-engines", default="duckdb,postgres,clickhouse")
    ap.add_argument("--wh-events", type=int, default=200_000, help="Loader vs raw, per engine.")
    ap.add_argument("--wh-view-events", type=int, default=10_000_000)
    ap.add_argument("--wh-iterations", type=int, default=100)
    ap.add_argument("--no-write", action="store_true", help="Do not touch BENCHMARKS.md.")
    ap.add_argument("--relay-rows", type=int, default=50_000, help="Outbox rows (relay).")
    ap.add_argument("--sources-events", type=int, default=100_000)
    ap.add_argument("--gov-events", type=int, default=10_000_000, help="Erasure/retention.")
    ap.add_argument("--gov-chdb-events", type=int, default=200_000)
    ap.add_argument("--usage-messages", type=int, default=100_000, help="Queued (usage).")
    ap.add_argument("--usage-events", type=int, default=10_000_000, help="Views (usage).")
    ap.add_argument("--usage-rate", type=int, default=1000, help="Background msgs/s (usage).")
    ap.add_argument("--usage-seconds", type=float, default=20, help="Probing time (usage).")
    ap.add_argument("--rollup-base", type=int, default=10_000_000, help="Loaded before (rollups).")
    ap.add_argument("--rollup-new", type=int, default=1_000_000, help="New events (rollups).")
    ap.add_argument("--delivery-ingest-events", type=int, default=200_000, help="Per pack.")
    ap.add_argument("--delivery-view-events", type=int, default=10_000_000, help="Lifecycle.")
    ap.add_argument(
        "--workers-events", type=int, default=100_000, help="serve vs serve --workers 2."
    )
    ap.add_argument("--servers-rounds", type=int, default=3, help="Runs per HTTP server (servers).")
    ap.add_argument("--dedupe-keys", default="1000000,10000000", help="Key-table sizes (dedupe).")
    ap.add_argument(
        "--single-requests", type=int, default=20_000, help="Per run, in process (single)."
    )
    args = ap.parse_args()
    only = set(args.only.split(","))
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
    }
    if "ingest" in only:
        from bench.ingest import end_to_end

        results["ingest"] = end_to_end(args.events)
        print("ingest", results["ingest"], flush=True)
    if "loader" in only:
        from bench.loader import loader_vs_raw

        results["loader"] = loader_vs_raw(args.events)
        print("loader", results["loader"], flush=True)
    if "pg_baseline" in only:
        from bench.baseline_pg import single_inserts

        results["pg_baseline"] = single_inserts(args.pg_events)
        print("pg_baseline", results["pg_baseline"], flush=True)
    if "latency" in only:
        from bench.ingest import to_queryable

        results["latency"] = to_queryable(args.latency_rate, args.latency_seconds)
        print("latency", results["latency"], flush=True)
        # The same load with the loader's fixed batch wait (before it adapted), same run.
        results["latency_fixed_wait"] = to_queryable(
            args.latency_rate, args.latency_seconds, {"GRISTMILL_LOADER__ADAPTIVE_WAIT": "false"}
        )
        print("latency_fixed_wait", results["latency_fixed_wait"], flush=True)
    if "analytics" in only:
        from bench.analytics import run_scale

        results["analytics"] = []
        for n in (int(x) for x in args.scales.split(",")):
            raw_iters = 20 if n <= 10_000_000 else 8
            results["analytics"].append(run_scale(n, 200, raw_iters))
            print("analytics", results["analytics"][-1], flush=True)
    if "dialects" in only:
        from bench.dialects import run as run_dialects

        results["dialects"] = run_dialects()
    # Sections that are one module each: ``run(*args)`` measures, ``render(results)`` tabulates.
    modular: dict[str, tuple[Any, ...]] = {
        "relay": (args.relay_rows,),
        "warehouses": (
            args.wh_engines.split(","),
            args.wh_events,
            args.wh_view_events,
            args.wh_iterations,
        ),
        "feeds": ([int(x) for x in args.feed_rows.split(",")],),
        "sources": (args.sources_events,),
        "governance": (args.gov_events, args.gov_chdb_events),
        "enrichment": (50_000,),
        "usage": (args.usage_messages, args.usage_events, args.usage_rate, args.usage_seconds),
        "rollups": (args.rollup_base, args.rollup_new),
        "peers": (args.events,),
        "frames": (args.events,),
        "provision": (args.wh_engines.split(","),),
        "delivery": (args.delivery_ingest_events, args.delivery_view_events),
        "workers": (args.workers_events,),
        "servers": (args.servers_rounds,),
        "dedupe": ([int(x) for x in args.dedupe_keys.split(",")],),
        "single": (args.single_requests,),
    }
    for name, run_args in modular.items():
        if name in only:
            results[name] = importlib.import_module(f"bench.{name}").run(*run_args)
            print(name, results[name], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engine-core-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    core = {"ingest", "loader", "pg_baseline", "latency"} & only
    if core:
        table = render(results)
        print(table)
        if not args.no_write:
            update_markdown("engine-core", table)
    if "dialects" in only:
        table = render_dialects(results)
        print(table)
        if not args.no_write:
            update_markdown("dialects", table)
    for name in modular:
        if name in only:
            table = importlib.import_module(f"bench.{name}").render(results)
            print(table)
            if not args.no_write:
                update_markdown(name, table)
    if "analytics" in only:
        table = render_analytics(results)
        print(table)
        if not args.no_write:
            update_markdown("analytics", table)


if __name__ == "__main__":
    main()
