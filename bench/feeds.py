"""CSV feeds: preview latency, commit + transform time and peak RSS on generated sales files,
beside DuckDB's own CSV reader on the same file in the same run.

Each measurement runs in a fresh child process (``python -m bench.feeds --child …``) so its
peak RSS (``VmHWM``) is its own; two file sizes show whether memory grows with the file.
Run alone: ``python -m bench.feeds --rows 250000,1000000``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.common import PACKS, ROOT, checkpointed

PRODUCTS = [f"Product {i:03d}" for i in range(200)]


def generate(path: Path, rows: int, seed: int = 3) -> int:
    """A sales CSV in the sales template's column names; returns its size in bytes."""
    rng = random.Random(seed)
    start = date.today() - timedelta(days=90)
    days = [(start + timedelta(days=d)).isoformat() for d in range(90)]
    with path.open("w", newline="") as fh:
        fh.write("transaction_date,product_name,quantity,price,discount,order_id,channel\n")
        for i in range(rows):
            fh.write(
                f"{rng.choice(days)},{rng.choice(PRODUCTS)},{rng.randint(1, 9)},"
                f"{rng.randint(100, 99_999) / 100:.2f},{rng.choice(('', '', '0.50'))},"
                f"o-{i // 3},{rng.choice(('Online', 'Offline'))}\n"
            )
    return path.stat().st_size


def _rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` belongs to the process image, so it starts afresh at
    exec; ``ru_maxrss`` would carry over the peak of the parent that forked this child (the
    whole ``make bench`` run, after the 10M-event sections)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_gristmill(csv: Path, work: Path) -> dict[str, Any]:
    from gristmill.config import Settings
    from gristmill.runtime import Runtime

    rt = Runtime(Settings(data_dir=work, packs_dir=PACKS, packs=["sales_feeds"]))
    try:
        svc = rt.feeds
        svc.create_products("1", [{"name": n, "cost_price": "1.00"} for n in PRODUCTS])
        # A server has committed a file before: the first Arrow hand-over to DuckDB of a
        # process imports pandas (~0.4 s), which a one-shot child would otherwise charge to
        # the measured commit. The warm-up is a 3-row file of another business.
        warm = work / "warm.csv"
        warm.write_text(
            "transaction_date,product_name,quantity,price\n"
            + "".join(f"2025-01-0{i},Warm,1,1.00\n" for i in (1, 2, 3))
        )
        with warm.open("rb") as fh:
            wup = svc.save_upload("2", "sales_feeds", "sales", warm.name, fh)
        svc.transformer.run(svc.commit(wup, auto_create_products=True, queue=False).feed_id)
        t0 = time.perf_counter()
        with csv.open("rb") as fh:
            up = svc.save_upload("1", "sales_feeds", "sales", csv.name, fh)
        preview = svc.preview(up)
        preview_s = time.perf_counter() - t0
        assert preview["summary"]["valid_rows"] == len(preview["rows"])
        rss_before = _rss_mb()  # imports, runtime, catalogue, preview: before any file pass
        t0 = time.perf_counter()
        res = svc.commit(up, auto_create_products=False, queue=False)
        commit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        status = svc.transformer.run(res.feed_id)
        transform_s = time.perf_counter() - t0
        # What the feed wrote reaches the file at a checkpoint, inside some later commit once
        # the WAL passes its threshold: run it here, on the clock.
        t0 = time.perf_counter()
        checkpointed(rt)
        checkpoint_s = time.perf_counter() - t0
        feed = svc.store.get_feed(res.feed_id)
        assert feed is not None
        assert status == "transformed", feed["summary"]
        return {
            "rows": res.record_count,
            "preview_s": round(preview_s, 3),
            "commit_s": round(commit_s, 2),
            "transform_s": round(transform_s, 2),
            "checkpoint_s": round(checkpoint_s, 2),
            "revenue_cents": feed["summary"]["metrics"]["gross_revenue_cents"],
            "rss_before_commit_mb": rss_before,
            "max_rss_mb": _rss_mb(),
        }
    finally:
        rt.stop()


def child_duckdb(csv: Path) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    t0 = time.perf_counter()
    rel = con.sql(
        "SELECT count(*) AS n, sum(CAST(round(quantity * price * 100) AS BIGINT)) AS cents "
        "FROM read_csv($p, header = true)",
        params={"p": str(csv)},
    )
    n, cents = rel.fetchall()[0]
    read_s = time.perf_counter() - t0
    return {"rows": n, "read_s": round(read_s, 2), "revenue_cents": cents, "max_rss_mb": _rss_mb()}


def _child(kind: str, csv: Path, work: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.feeds", "--child", kind, str(csv), str(work)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(sizes: list[int]) -> list[dict[str, Any]]:
    results = []
    for rows in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "sales.csv"
            size = generate(csv, rows)
            g = _child("gristmill", csv, Path(tmp) / "gm")
            d = _child("duckdb", csv, Path(tmp) / "dd")
            assert g["revenue_cents"] == d["revenue_cents"], (g, d)
            r = {"rows": rows, "file_mb": round(size / 1e6, 1), "gristmill": g, "duckdb": d}
            print("feeds", r, flush=True)
            results.append(r)
    return results


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores.",
        "",
        "| rows (file) | preview | commit (parse, validate, match, stage) | transform "
        "| checkpoint | commit + transform + checkpoint | rows/s | peak RSS (before commit) "
        "| DuckDB read_csv + sum, same file | DuckDB RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["feeds"]:
        g, d = r["gristmill"], r["duckdb"]
        total = g["commit_s"] + g["transform_s"] + g["checkpoint_s"]
        lines.append(
            f"| {r['rows']:,} ({r['file_mb']} MB) | {g['preview_s']} s | {g['commit_s']} s | "
            f"{g['transform_s']} s | {g['checkpoint_s']} s | {total:.2f} s | "
            f"{round(r['rows'] / total):,} | "
            f"{g['max_rss_mb']} MB ({g.get('rss_before_commit_mb', '?')} MB) | {d['read_s']} s | "
            f"{d['max_rss_mb']} MB |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "CSV", "WORK"))
    ap.add_argument("--rows", default="250000,1000000")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.child:
        kind, csv, work = args.child
        fn = (
            child_gristmill(Path(csv), Path(work))
            if kind == "gristmill"
            else child_duckdb(Path(csv))
        )
        print(json.dumps(fn))
        return
    from bench.__main__ import machine, update_markdown

    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "feeds": run([int(x) for x in args.rows.split(",")]),
    }
    table = render(results)
    print(table)
    if not args.no_write:
        update_markdown("feeds", table)


if __name__ == "__main__":
    main()
