"""``gristmill exports create|list|show|reconcile``.

Like the other operator commands: with a server running (``server.json``) they call its API
as the local operator; without one they open the files and ``create`` runs the job in this
process (a spinner shows it), so the same command works on a laptop and on a server.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.cli.common import (
    DataDirOpt,
    JsonOpt,
    PacksOpt,
    ServerClient,
    api_call,
    console,
    err_console,
    fail,
    make_settings,
    missing_state,
    nothing_stored,
    one_line,
    open_runtime,
    print_json,
    running_server,
)
from gristmill.core.errors import Problem
from gristmill.exports import RowsStream

app = typer.Typer(help="CSV exports a pack declares (docs/exports.md).", no_args_is_help=True)

LOCAL = Principal(kind="local", role=OPERATOR)
POLL_S = 0.3


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        k, sep, val = v.partition("=")
        if not sep or not k:
            fail(f"{what} is column=value, got {v!r}")
        out[k] = val
    return out


def _write_csv(chunks: Any, out: Path | None) -> None:
    if out is None:
        for c in chunks:
            sys.stdout.buffer.write(c)
        sys.stdout.buffer.flush()
        return
    with out.open("wb") as fh:
        for c in chunks:
            fh.write(c)


def render(job: dict[str, Any]) -> None:
    colour = {"succeeded": "green", "failed": "red"}.get(job["status"], "yellow")
    console.print(
        f"export [b]{job['id']}[/] {job['pack']}.{job['export']} {job['period']}: "
        f"[{colour}]{job['status']}[/] (attempt {job['attempts']}, scope {job['scope'] or 'all'})"
    )
    if job.get("rows") is not None:
        console.print(f"rows {job['rows']:,}, {job['bytes']:,} bytes, sha256 {job['checksum']}")
        console.print(f"totals {job['totals']}, watermark {job['watermark']}")
    if job.get("reconciled") is not None:
        verdict = "[green]reconciled[/]" if job["reconciled"] else "[red]NOT reconciled[/]"
        console.print(f"{verdict}: {(job.get('reconciliation') or {}).get('differences', {})}")
    for k in ("object", "url", "expires_at"):
        if job.get(k):
            console.print(f"{k}: {job[k]}")
    if job.get("error"):
        console.print(f"[red]error:[/] {one_line(job['error'])}")


def _wait_server(client: ServerClient, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    path = f"/v1/exports/jobs/{job['id']}"
    with err_console.status(f"export {job['id']}: {job['status']}") as spinner:
        while job["status"] not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                fail(f"export {job['id']} is still {job['status']}; see `gristmill exports show`")
            time.sleep(POLL_S)
            job = api_call(lambda: client.get(path), client)
            spinner.update(f"export {job['id']}: {job['status']} (attempt {job['attempts']})")
    return job


@app.command("create")
def create(
    pack: Annotated[str, typer.Argument(help="The pack declaring the export.")],
    export: Annotated[str, typer.Argument(help="The export's name in the pack.")],
    start: Annotated[str | None, typer.Option(help="Rows: window start (ISO 8601).")] = None,
    end: Annotated[str | None, typer.Option(help="Rows: window end, exclusive.")] = None,
    filter_: Annotated[
        list[str] | None, typer.Option("--filter", help="Rows: column=value; repeatable.")
    ] = None,
    period: Annotated[str | None, typer.Option(help="Metrics: 2026-11 or mtd.")] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="Metrics: column=value (one tenant); repeatable.")
    ] = None,
    as_job: Annotated[bool, typer.Option("--as-job", help="Rows: always make a job.")] = False,
    out: Annotated[Path | None, typer.Option(help="Where a streamed CSV goes (stdout).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish.")] = True,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait (server).")] = 3600,
    data_dir: DataDirOpt = None,
    packs: PacksOpt = None,
    json: JsonOpt = False,
) -> None:
    """Ask for an export: a small rows window is written as CSV, anything else is a job."""
    if period is not None:
        body: dict[str, Any] = {"period": period, "scope": _pairs(scope, "--scope") or "all"}
    elif start and end:
        body = {"start": start, "end": end, "filters": _pairs(filter_, "--filter")}
        if as_job:
            body["as_job"] = True
    else:
        fail("give --start and --end (a rows export) or --period (a metrics export)")
    settings = make_settings(data_dir, packs)
    client = running_server(settings)
    if client is not None:
        try:
            r = client.request("POST", f"/v1/exports/{pack}/{export}", json=body)
        except httpx.TransportError as exc:
            fail(f"the server at {client.url} is not reachable ({type(exc).__name__})")
        if r.status_code >= 400:
            fail(f"the server answered {r.status_code}: {one_line(r.json().get('detail'))}")
        if r.headers.get("content-type", "").startswith("text/csv"):
            _write_csv(r.iter_bytes(), out)
            return
        job: dict[str, Any] = r.json()
        if wait:
            job = _wait_server(client, job, timeout)
    else:
        with open_runtime(settings) as rt:
            try:
                made = rt.exports.create(LOCAL, pack, export, body)
            except Problem as exc:
                fail(exc.detail or exc.title)
            if isinstance(made, RowsStream):
                _write_csv(made.body, out)
                return
            if wait:
                with err_console.status(f"export {made.id}: running in this process"):
                    rt.exports.run_pending()
            job = rt.exports.describe(rt.exports.job(LOCAL, made.id))
    if json:
        print_json(job)
    else:
        render(job)
    if job["status"] == "failed":
        raise typer.Exit(1)


@app.command("list")
def list_(
    pack: Annotated[str | None, typer.Option(help="Only this pack's jobs.")] = None,
    export: Annotated[str | None, typer.Option(help="Only this export's jobs.")] = None,
    status: Annotated[str | None, typer.Option(help="queued|running|succeeded|failed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Export jobs, newest first."""
    settings = make_settings(data_dir)
    client = running_server(settings)
    if client is not None:
        got = api_call(
            lambda: client.get(
                "/v1/exports/jobs", pack=pack, export=export, status=status, limit=limit
            ),
            client,
        )
        items: list[dict[str, Any]] = got["items"]
    elif missing_state(settings) is not None:
        items = []
    else:
        with open_runtime(settings) as rt:
            jobs, _ = rt.exports.list_jobs(
                LOCAL, pack=pack, export=export, status=status, limit=limit
            )
            items = [j.as_dict() for j in jobs]
    if json:
        print_json({"items": items})
        return
    t = Table(title=f"{len(items)} export job(s)")
    for col in ("job", "export", "period", "scope", "status", "tries", "rows", "reconciled"):
        t.add_column(col, overflow="fold")
    for j in items:
        t.add_row(
            j["id"],
            f"{j['pack']}.{j['export']}",
            j["period"],
            ",".join(f"{k}={v}" for k, v in j["scope"].items()) or "all",
            j["status"],
            str(j["attempts"]),
            "" if j["rows"] is None else f"{j['rows']:,}",
            "" if j["reconciled"] is None else str(j["reconciled"]).lower(),
        )
    console.print(t)


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    wait: Annotated[bool, typer.Option(help="Wait until it finished (server).")] = False,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """One job: status, attempts, totals, reconciliation, and signed URLs once succeeded."""
    settings = make_settings(data_dir)
    client = running_server(settings)
    if client is not None:
        job: dict[str, Any] = api_call(lambda: client.get(f"/v1/exports/jobs/{job_id}"), client)
        if wait:
            job = _wait_server(client, job, 3600)
    elif missing_state(settings) is not None:
        fail(f"no export job {job_id!r}: {nothing_stored(settings)}")
    else:
        with open_runtime(settings) as rt:
            try:
                job = rt.exports.describe(rt.exports.job(LOCAL, job_id))
            except Problem as exc:
                fail(exc.detail)
    if json:
        print_json(job)
    else:
        render(job)


@app.command("reconcile")
def reconcile(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Check a finished export's CSV totals against its source again; exit 1 on a difference."""
    settings = make_settings(data_dir)
    client = running_server(settings)
    if client is not None:
        result: dict[str, Any] = api_call(
            lambda: client.get(f"/v1/exports/jobs/{job_id}/reconcile"), client
        )
    else:
        with open_runtime(settings) as rt:
            try:
                result = rt.exports.reconcile(job_id, LOCAL)
            except Problem as exc:
                fail(exc.detail)
    if json:
        print_json(result)
    else:
        t = Table(title=f"export {job_id}: {result.get('source', '')}")
        for col in ("column", "csv", "expected", "difference"):
            t.add_column(col, justify="right")
        for c, v in (result.get("columns") or {}).items():
            t.add_row(c, f"{v['csv']:,}", f"{v['expected']:,}", f"{v['difference']:,}")
        console.print(t)
        ok = result.get("reconciled")
        console.print("[green]reconciled[/]" if ok else f"[red]NOT reconciled[/] {result}")
    if not result.get("reconciled"):
        raise typer.Exit(1)
