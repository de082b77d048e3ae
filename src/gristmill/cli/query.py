"""``gristmill query``: any pack metric from the command line; ``--explain`` shows the plan
(rollup or rows) and the SQL. Asks the running server, or reads the files when none runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from rich.syntax import Syntax
from rich.table import Table

from gristmill.cli.common import (
    DataDirOpt,
    JsonOpt,
    console,
    fail,
    make_settings,
    missing_state,
    nothing_stored,
    running_server,
)
from gristmill.core.errors import Problem


def _offline(data_dir: DataDirOpt, params: dict[str, Any]) -> dict[str, Any]:
    from gristmill.api.query import metric_query, time_range
    from gristmill.auth.permissions import OPERATOR, Principal
    from gristmill.metrics.service import run
    from gristmill.runtime import Runtime

    rt = Runtime(make_settings(data_dir))
    try:
        op = Principal(kind="local", role=OPERATOR)
        pack = rt.roles.pack_for(op, params.get("pack"))
        start = datetime.fromisoformat(params["start"]) if params.get("start") else None
        end = datetime.fromisoformat(params["end"]) if params.get("end") else None
        rng = time_range(params.get("preset"), start, end, params["tz"], default_preset=None)
        q = metric_query(
            rt,
            op,
            pack,
            metrics=params["metrics"].split(","),
            rng=rng,
            grain=params.get("grain"),
            group_by=[g for g in (params.get("group_by") or "").split(",") if g],
            filters=params.get("filter", []),
            debug=True,
        )
        result = run(rt.warehouse, q)
        return {
            "range": rng.as_dict(),
            "rows": result.rows,
            "debug": result.debug(rt.warehouse.dialect),
        }
    finally:
        rt.stop()


def query(
    metrics: Annotated[str, typer.Option(help="Comma-separated metric names.")],
    preset: Annotated[str | None, typer.Option(help="7d, 30d, 90d …")] = None,
    start: Annotated[str | None, typer.Option(help="Range start, ISO 8601.")] = None,
    end: Annotated[str | None, typer.Option(help="Range end (exclusive), ISO 8601.")] = None,
    grain: Annotated[str | None, typer.Option(help="hour, day, week or month.")] = None,
    tz: Annotated[str, typer.Option(help="IANA time zone.")] = "UTC",
    group_by: Annotated[str | None, typer.Option(help="Comma-separated dimensions.")] = None,
    filter_: Annotated[list[str] | None, typer.Option("--filter", help="column:op:value.")] = None,
    pack: Annotated[str | None, typer.Option(help="Pack (when several are served).")] = None,
    explain: Annotated[bool, typer.Option(help="Show the path (rollup/raw) and the SQL.")] = False,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Query pack metrics as the operator (unscoped)."""
    if preset is None and start is None:
        preset = "30d"
    params: dict[str, Any] = {
        "metrics": metrics,
        "preset": preset,
        "start": start,
        "end": end,
        "grain": grain,
        "tz": tz,
        "group_by": group_by,
        "filter": filter_ or [],
        "pack": pack,
    }
    settings = make_settings(data_dir)
    client = running_server(settings)
    try:
        if client is not None:
            data = client.get("/v1/metrics", **{k: v for k, v in params.items() if v}, debug="true")
        elif missing_state(settings) is not None:
            fail(nothing_stored(settings))
        else:
            data = _offline(data_dir, params)
    except Problem as p:
        fail(f"{p.title}: {p.detail}")
    if json:
        console.print_json(
            orjson.dumps(
                data if explain else {k: v for k, v in data.items() if k != "debug"}
            ).decode()
        )
        return
    rows = data["rows"]
    t = Table(title=f"{data['range']['start']} → {data['range']['end']} ({tz})")
    for col in rows[0].keys() if rows else metrics.split(","):
        t.add_column(col, justify="left" if col in ("bucket",) else "right")
    for r in rows:
        t.add_row(
            *[
                "" if v is None else f"{v:,}" if isinstance(v, int | float) else str(v)
                for v in r.values()
            ]
        )
    console.print(t)
    if explain:
        for d in data.get("debug", []):
            console.print(
                f"[b]{d['table']}[/]: path [b]{d['path']}[/]"
                + (f" (rollup {d['rollup']})" if d["rollup"] else "")
            )
            console.print(Syntax(d["sql"], "sql", word_wrap=True))
            console.print(f"params: {d['params']}")
