"""The Grafana dashboard of Gristmill, generated with grafana-foundation-sdk.

``python -m gristmill.deploy.grafana`` writes ``deploy/grafana/gristmill.json`` from this code
and from the packs that declare ``observe:`` (one panel per published metric, with the unit
the pack gives the metric). Code instead of a hand-edited JSON file, because the panels must
follow what ``/metrics`` exposes: a test regenerates the file, checks the committed one is
current, and checks every metric name in every panel expression against a live ``/metrics``.

Expressions reduce over ``instance`` before summing warehouse-wide series (conservation
counters, log depth, pack metrics, freshness), since every serving process reports the same
values; per-process series (loader batches, requests, consumers) are summed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

from gristmill.pack.loader import load_pack
from gristmill.pack.models import Pack

UID = "gristmill-operations"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PACK = 'pack=~"$pack"'
RATE = "[$__rate_interval]"
UNITS = {"cents": "suffix:¢", "ms": "ms", "s": "s", "seconds": "s", "bytes": "bytes"}
"""Grafana units of the pack metric units that have one; others show as plain numbers."""


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


def _panel(
    title: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    description: str = "",
    width: int = 12,
    stack: bool = False,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    if stack:
        p = p.stacking(StackingConfig().mode(common.StackingMode.NORMAL))
    for i, q in enumerate(queries):
        p = p.with_target(
            prometheus.Dataquery()
            .expr(q.expr)
            .legend_format(q.legend)
            .ref_id(chr(ord("A") + i))
            .datasource(DATASOURCE)
        )
    return p


def _stat(title: str, expr: str, *, description: str, unit: str = "short") -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(6)
        .height(4)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(prometheus.Dataquery().expr(expr).instant().ref_id("A").datasource(DATASOURCE))
    )


def _pipeline() -> list[timeseries.Panel | stat.Panel]:
    return [
        _stat(
            "Conservation",
            "min(gristmill_conservation_balanced)",
            description="1 when received = loaded + quarantined + duplicates + in flight.",
        ),
        _stat(
            "Events in flight",
            f"sum(max without (instance) (gristmill_events_in_flight{{{PACK}}}))",
            description="Received, durable in the log, not yet in the warehouse.",
        ),
        _stat(
            "Oldest unloaded event",
            "max(gristmill_load_lag_seconds)",
            description="Age of the oldest event in the log.",
            unit="s",
        ),
        _stat(
            "Uptime",
            "min(gristmill_uptime_seconds)",
            description="Seconds since the youngest server started.",
            unit="s",
        ),
        _panel(
            "Ingest requests by status",
            [
                Query(
                    f"sum by (status) (rate(gristmill_http_requests_total{RATE}))",
                    "{{status}}",
                )
            ],
            unit="reqps",
            stack=True,
        ),
        _panel(
            "Events per second",
            [
                Query(
                    "sum by (pack) (max without (instance) "
                    f"(rate(gristmill_events_{what}_total{{{PACK}}}{RATE})))",
                    f"{{{{pack}}}} {what}",
                )
                for what in ("received", "loaded", "quarantined", "duplicates")
            ],
            unit="ops",
        ),
        _panel(
            "Ingest latency",
            [
                Query(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(gristmill_http_request_duration_seconds_bucket{RATE})))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            unit="s",
            description="Request start to answer (events durable in the log).",
        ),
        _panel(
            "Refused requests",
            [
                Query(
                    f"sum by (reason) (rate(gristmill_requests_rejected_total{RATE}))",
                    "{{reason}}",
                ),
                Query(
                    f"sum by (scope, route_class) (rate(gristmill_rate_limited_total{RATE}))",
                    "rate limited {{scope}} {{route_class}}",
                ),
            ],
            unit="reqps",
        ),
    ]


def _freshness() -> list[timeseries.Panel | stat.Panel]:
    budget = f"max by (pack) (gristmill_freshness_budget_seconds{{{PACK}}})"
    return [
        _panel(
            "Freshness: received but not queryable",
            [
                Query(
                    "max by (pack) (max without (instance) "
                    f"(gristmill_freshness_watermark_lag_seconds{{{PACK}}}))",
                    "{{pack}}",
                ),
                Query(budget, "{{pack}} budget"),
            ],
            unit="s",
            description="Age of each pack's oldest received event not in the warehouse yet.",
        ),
        _panel(
            "Freshness: since the newest load, per table",
            [
                Query(
                    f"min by (pack, table) (gristmill_freshness_lag_seconds{{{PACK}}})",
                    "{{pack}}.{{table}}",
                ),
                Query(budget, "{{pack}} budget"),
            ],
            unit="s",
        ),
    ]


def _log_and_loader() -> list[timeseries.Panel | stat.Panel]:
    return [
        _panel(
            "Log depth",
            [
                Query("max(gristmill_log_depth_events)", "events"),
                Query(
                    "sum by (pack) (max without (instance) "
                    f"(gristmill_events_in_flight{{{PACK}}}))",
                    "{{pack}} in flight",
                ),
            ],
        ),
        _panel(
            "Log depth (bytes)", [Query("max(gristmill_log_depth_bytes)", "bytes")], unit="bytes"
        ),
        _panel(
            "Loader",
            [
                Query(f"sum(rate(gristmill_loader_batches_total{RATE}))", "batches"),
                Query(f"sum(rate(gristmill_loader_failures_total{RATE}))", "failures"),
            ],
            unit="ops",
        ),
        _panel(
            "Observed metrics: groups and failures",
            [
                Query(f"max by (pack) (gristmill_pack_metric_groups{{{PACK}}})", "{{pack}} groups"),
                Query(
                    f"sum by (pack) (increase(gristmill_pack_metric_failures_total{{{PACK}}}[1h]))",
                    "{{pack}} failures (1h)",
                ),
            ],
        ),
    ]


def _consumers_and_exports() -> list[timeseries.Panel | stat.Panel]:
    return [
        _panel(
            "Consumer backlog",
            [
                Query(
                    "sum by (instance, queue) (gristmill_consumer_backlog_messages)",
                    "{{queue}} ({{instance}})",
                )
            ],
        ),
        _panel(
            "Consumers",
            [
                Query(
                    f"sum by (instance) (rate(gristmill_consumer_acked_total{RATE}))",
                    "acked {{instance}}",
                ),
                Query(
                    f"sum by (instance) (rate(gristmill_consumer_quarantined_total{RATE}))",
                    "quarantined {{instance}}",
                ),
                Query("max by (instance) (gristmill_consumer_paused)", "paused {{instance}}"),
            ],
        ),
        _panel(
            "Export jobs",
            [Query("sum by (status) (gristmill_export_jobs)", "{{status}}")],
            stack=True,
        ),
        _panel(
            "Export job failures",
            [Query("sum(increase(gristmill_export_job_failures_total[1h]))", "failed (1h)")],
        ),
    ]


def _errors() -> list[timeseries.Panel | stat.Panel]:
    errors = 'sum by (pack) (max without (instance) (gristmill_pack_metric{metric="errors"}))'
    requests = 'sum by (pack) (max without (instance) (gristmill_pack_metric{metric="requests"}))'
    return [
        _panel(
            "Requests and errors (packs publishing them)",
            [Query(requests, "{{pack}} requests"), Query(errors, "{{pack}} errors")],
            description="Each pack's `requests` and `errors` over its observe window.",
        ),
        _panel(
            "Error rate",
            [Query(f"{errors} / ({requests} > 0)", "{{pack}}")],
            unit="percentunit",
            description="What GristmillErrorRateSpike compares with its last hour.",
        ),
    ]


def _pack_panels(pack: Pack) -> list[timeseries.Panel | stat.Panel]:
    spec = pack.spec.observe
    assert spec is not None
    window = int(spec.window.total_seconds())
    dims = ", ".join(spec.group_by)
    legend = " ".join(f"{{{{{d}}}}}" for d in spec.group_by) or "{{pack}}"
    out: list[timeseries.Panel | stat.Panel] = []
    for published, name in spec.metrics.items():
        m = pack.spec.metrics[name]
        by = f"sum by ({dims}) " if dims else "sum "
        expr = (
            f"{by}(max without (instance) "
            f'(gristmill_pack_metric{{pack="{pack.name}", metric="{published}"}}))'
        )
        title = published if published == name else f"{published} ({name})"
        out.append(
            _panel(
                f"{title}, last {_span(window)}",
                [Query(expr, legend)],
                unit=UNITS.get(m.unit, "short"),
                description=m.description,
                width=8,
                stack=m.type in ("count", "sum") and bool(dims),
            )
        )
    return out


def _span(seconds: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def build(packs: Sequence[Pack]) -> db.Dashboard:
    d = (
        db.Dashboard("Gristmill")
        .uid(UID)
        .description("Pipeline, freshness, consumers, exports and observed pack metrics.")
        .tags(["gristmill", "generated"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            db.QueryVariable("pack")
            .label("Pack")
            .datasource(DATASOURCE)
            .query("label_values(gristmill_events_in_flight, pack)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    sections: list[tuple[str, list[timeseries.Panel | stat.Panel]]] = [
        ("Pipeline", _pipeline()),
        ("Freshness", _freshness()),
        ("Errors", _errors()),
        ("Log and loader", _log_and_loader()),
        ("Consumers and exports", _consumers_and_exports()),
    ]
    sections += [
        (f"Pack {p.name}: observed metrics", _pack_panels(p))
        for p in packs
        if p.spec.observe is not None
    ]
    panel_id = 0
    for title, panels in sections:
        panel_id += 1
        d = d.with_row(db.Row(title).id(panel_id))
        for panel in panels:
            panel_id += 1
            d = d.with_panel(panel.id(panel_id))
    return d


def render(packs: Sequence[Pack]) -> str:
    """The dashboard JSON, stable from run to run (sorted keys, two-space indent)."""
    model = build(packs).build()
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def observed_packs(packs_dir: Path) -> list[Pack]:
    """Every pack under ``packs_dir`` that declares ``observe:``, by name."""
    out = []
    for path in sorted(packs_dir.glob("*/pack.yaml")):
        pack = load_pack(path.parent)
        if pack.spec.observe is not None:
            out.append(pack)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gristmill.deploy.grafana")
    parser.add_argument("--packs-dir", type=Path, default=Path("packs"))
    parser.add_argument("--out", type=Path, default=Path("deploy/grafana/gristmill.json"))
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(observed_packs(args.packs_dir)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
