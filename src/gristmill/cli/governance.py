"""``gristmill erase``, ``gristmill erasure status|list|verify``, ``gristmill retention run``
and ``gristmill audit``.

Like the other operator commands: with a server running (``server.json`` in the data
directory) they call its API as the local operator; without one they open the files. Offline,
``erase``, ``erasure verify`` and ``retention run`` do the work in this process;
``erasure status|list`` and ``audit`` only read the metadata store and never run anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

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
    one_line,
    open_runtime,
    print_json,
    running_server,
)
from gristmill.config import Settings
from gristmill.core.subjects import Mode
from gristmill.governance.erasure import Subject
from gristmill.governance.service import ErasureRefused
from gristmill.meta.governance import GovernanceStore
from gristmill.meta.store import MetaStore

if TYPE_CHECKING:
    from gristmill.runtime import Runtime

POLL_S = 0.2
FINISHED = ("completed", "failed")

erasure_app = typer.Typer(help="Erasure requests and their receipts.", no_args_is_help=True)
retention_app = typer.Typer(help="Enforce the packs' retention.", no_args_is_help=True)


class ErasureStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


LimitOpt = Annotated[int, typer.Option(min=1, max=1000, help="At most this many rows.")]


# -- plumbing ----------------------------------------------------------------------------------


@contextmanager
def _store(settings: Settings) -> Iterator[GovernanceStore]:
    """The metadata store alone: reading requests and the audit log runs nothing."""
    if settings.meta_url is None and not (settings.data_dir / "meta.sqlite").exists():
        fail(f"no metadata store in {settings.data_dir} (nothing has run there yet)")
    try:
        meta = MetaStore(settings.meta_database_url)
    except Exception as exc:
        fail(f"cannot open the metadata store: {type(exc).__name__}: {one_line(exc)}")
    try:
        yield meta.governance
    finally:
        meta.close()


# -- receipts ----------------------------------------------------------------------------------
def render_receipt(rec: dict[str, Any]) -> None:
    status = rec["status"]
    colour = {"completed": "green", "failed": "red"}.get(status, "yellow")
    console.print(
        f"erasure [b]{rec['request_id']}[/]: [{colour}]{status}[/] "
        f"({rec['mode']}, {rec['subjects']} identifier hash(es), by {rec['requested_by']}, "
        f"requested {rec['requested_at']})"
    )
    report: dict[str, Any] = rec.get("report") or {}
    if report.get("tables"):
        t = Table(title="Rows")
        t.add_column("table")
        t.add_column("action")
        t.add_column("rows", justify="right")
        for row in report["tables"]:
            t.add_row(row["table"], row["action"], f"{int(row['rows']):,}")
        t.add_row("[b]total[/]", "", f"[b]{int(report.get('rows_total', 0)):,}[/]")
        console.print(t)
    if report.get("rollups"):
        t = Table(title="Rollups recomputed")
        t.add_column("rollup")
        t.add_column("buckets", justify="right")
        for row in report["rollups"]:
            t.add_row(row["rollup"], f"{int(row['buckets_recomputed']):,}")
        console.print(t)
    if report:
        console.print(f"quarantine items deleted: {int(report.get('quarantine_items', 0)):,}")
        seconds = report.get("seconds", rec.get("seconds"))
        within = report.get("within_deadline")
        deadline = report.get("deadline_s")
        verdict = (
            ""
            if within is None
            else (
                f", [green]within the {deadline:g} s deadline[/]"
                if within
                else f", [red]past the {deadline:g} s deadline[/]"
            )
        )
        console.print(f"took {seconds} s{verdict}")
    if rec.get("error"):
        console.print(f"[red]error:[/] {one_line(rec['error'])}")


def _wait(client: ServerClient, record: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    request_id = record["request_id"]
    deadline = time.monotonic() + timeout_s
    with err_console.status(f"erasing {request_id}: {record['status']}") as spinner:
        while record["status"] not in FINISHED:
            if time.monotonic() > deadline:
                fail(
                    f"erasure {request_id} is still {record['status']} after {timeout_s:g} s; "
                    f"see `gristmill erasure status {request_id}`"
                )
            time.sleep(POLL_S)
            record = api_call(lambda: client.get(f"/v1/erasure/{request_id}"), client)
            spinner.update(f"erasing {request_id}: {record['status']}")
    return record


def erase(
    user_id: Annotated[
        list[str] | None,
        typer.Option("--user-id", help="A user id to erase; repeatable.", show_default=False),
    ] = None,
    anonymous_id: Annotated[
        list[str] | None,
        typer.Option("--anonymous-id", help="An anonymous id; repeatable.", show_default=False),
    ] = None,
    email: Annotated[
        list[str] | None,
        typer.Option("--email", help="An email address; repeatable.", show_default=False),
    ] = None,
    mode: Annotated[
        Mode, typer.Option(help="delete the rows, or keep them without identity.")
    ] = Mode.DELETE,
    wait: Annotated[
        bool,
        typer.Option(
            help="Wait for the receipt. --no-wait only records and suppresses the subject "
            "(offline the job then runs at the next `gristmill serve` or `gristmill erase`)."
        ),
    ] = True,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for a running server's job.")
    ] = 600.0,
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    json: JsonOpt = False,
) -> None:
    """Erase (or anonymize) a subject everywhere: rows, rollups, quarantine, log (GDPR Art. 17)."""
    subject = Subject(tuple(user_id or ()), tuple(anonymous_id or ()), tuple(email or ()))
    if not subject.identifiers():
        fail("name at least one --user-id, --anonymous-id or --email")
    settings = make_settings(data_dir, pack)
    client = running_server(settings)
    if client is not None:
        body = {
            "user_ids": list(subject.user_ids),
            "anonymous_ids": list(subject.anonymous_ids),
            "emails": list(subject.emails),
            "mode": mode.value,
        }
        record: dict[str, Any] = api_call(lambda: client.post("/v1/erasure", body), client)
        if wait:
            record = _wait(client, record, timeout)
    else:
        with open_runtime(settings) as rt:
            gov = rt.governance
            gov.resume_unfinished()  # an earlier request no process finished runs first
            try:
                request_id = gov.request_erasure(subject, mode, actor="cli")
            except ErasureRefused as exc:
                fail(str(exc))
            if wait:
                with err_console.status(f"erasing {request_id}"):
                    done = gov.run_pending()
                earlier = [d for d in done if d != request_id]
                if earlier and not json:
                    err_console.print(
                        f"also ran {len(earlier)} earlier unfinished request(s): "
                        + ", ".join(earlier)
                    )
            got = gov.status(request_id)
            assert got is not None
            record = got.as_dict()
    if json:
        print_json(record)
    else:
        render_receipt(record)
        if record["status"] not in FINISHED:
            console.print(f"see `gristmill erasure status {record['request_id']}`")
    if record["status"] == "failed":
        fail(f"erasure {record['request_id']} failed: {one_line(record.get('error') or '')}")


def _post_or_run(
    settings: Settings, path: str, here: Callable[[Runtime], dict[str, Any]], what: str
) -> dict[str, Any]:
    """A governance job's report: from the running server's API (``POST path``, as the
    local operator), or run in this process when no server holds the files."""
    client = running_server(settings)
    if client is not None:
        report: dict[str, Any] = api_call(lambda: client.post(path, None), client)
        return report
    with open_runtime(settings) as rt, err_console.status(f"{what} running"):
        try:
            return here(rt)
        except Exception as exc:
            fail(f"{what} failed: {type(exc).__name__}: {one_line(exc)}")


# -- erasure status / list ---------------------------------------------------------------------
@erasure_app.command("status")
def erasure_status(
    request_id: Annotated[str, typer.Argument(help="The id `gristmill erase` printed.")],
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """One erasure request's lifecycle and, once done, its receipt."""
    settings = make_settings(data_dir)
    client = running_server(settings)
    if client is not None:
        record: dict[str, Any] = api_call(lambda: client.get(f"/v1/erasure/{request_id}"), client)
    else:
        with _store(settings) as store:
            got = store.request(request_id)
        if got is None:
            fail(f"no erasure request {request_id[:64]!r}")
        record = got.as_dict()
    if json:
        print_json(record)
    else:
        render_receipt(record)


@erasure_app.command("list")
def erasure_list(
    status: Annotated[
        ErasureStatus | None, typer.Option(help="Only requests in this state.")
    ] = None,
    limit: LimitOpt = 100,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Erasure requests, newest first."""
    settings = make_settings(data_dir)
    client = running_server(settings)
    wanted = status.value if status else None
    items: list[dict[str, Any]]
    if client is not None:
        res = api_call(lambda: client.get("/v1/erasure", status=wanted, limit=limit), client)
        items = res["items"]
    else:
        with _store(settings) as store:
            items = [r.as_dict() for r in store.requests(status=wanted, limit=limit)]
    if json:
        print_json({"items": items})
        return
    t = Table(title=f"{len(items)} erasure request(s)")
    for col in ("request", "status", "mode", "ids", "by", "requested", "seconds", "rows", "error"):
        t.add_column(col, overflow="fold")
    for r in items:
        report = r.get("report") or {}
        t.add_row(
            r["request_id"],
            r["status"],
            r["mode"],
            str(r["subjects"]),
            r["requested_by"],
            r["requested_at"] or "",
            "" if r["seconds"] is None else f"{r['seconds']:g}",
            "" if "rows_total" not in report else f"{int(report['rows_total']):,}",
            one_line(r.get("error") or "")[:80],
        )
    console.print(t)


@erasure_app.command("verify")
def erasure_verify(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Erase again what still names an erased subject (else only count)."
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    json: JsonOpt = False,
) -> None:
    """Check that erased subjects stay erased: rows that still name one, per table.

    Exits 1 when rows were found and not repaired, or when an erased identifier appears
    whose rows the search could not locate (a check for cron or CI)."""
    flag = "true" if repair else "false"
    report = _post_or_run(
        make_settings(data_dir, pack),
        f"/v1/erasure/verify?repair={flag}",
        lambda rt: rt.governance.verify_erasures(repair=repair, actor="cli").as_dict(),
        "verify",
    )
    if json:
        print_json(report)
    else:
        t = Table(title="Erased subjects still named" + (" (repaired)" if repair else ""))
        for col in ("table", "identities checked", "mode", "identifiers", "rows", "unlocated"):
            t.add_column(col, justify="left" if col in ("table", "mode") else "right")
        for row in report["tables"]:
            for f in row["found"] or [{"mode": "—", "identifiers": 0, "rows": 0}]:
                t.add_row(
                    row["table"],
                    f"{int(row['identities']):,}",
                    f["mode"],
                    f"{int(f['identifiers']):,}",
                    f"{int(f['rows']):,}",
                    f"{int(row['unlocated']):,}",
                )
        console.print(t)
        verb = "erased again" if repair else "found"
        console.print(f"rows naming an erased subject {verb}: {int(report['rows_found']):,}")
        if report["unlocated"]:
            err_console.print(
                f"{int(report['unlocated']):,} erased identifier(s) appear in the tables but "
                "the row search did not locate their rows (an unusual JSON spelling?): "
                "nothing was erased for them"
            )
    if report["unlocated"] or (report["rows_found"] and not repair):
        raise typer.Exit(1)


# -- retention ---------------------------------------------------------------------------------
@retention_app.command("run")
def retention_run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be removed; change nothing.")
    ] = False,
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    json: JsonOpt = False,
) -> None:
    """Remove rows, partitions, rollup buckets and quarantine items past their retention."""
    flag = "true" if dry_run else "false"
    report = _post_or_run(
        make_settings(data_dir, pack),
        f"/v1/retention/run?dry_run={flag}",
        lambda rt: rt.governance.run_retention(dry_run=dry_run, actor="cli").as_dict(),
        "retention",
    )
    if json:
        print_json(report)
        return
    t = Table(title="Retention" + (" (dry run)" if report["dry_run"] else ""))
    for col in ("table", "category", "method", "cutoff", "rows"):
        t.add_column(col, justify="right" if col == "rows" else "left")
    for a in report["actions"]:
        t.add_row(a["table"], a["category"], a["method"], a["cutoff"], f"{int(a['rows']):,}")
    console.print(t)
    parts = report["partitions_dropped"]
    if parts:
        p = Table(title="Partitions " + ("to drop" if report["dry_run"] else "dropped"))
        for col in ("table", "partition", "start", "end", "rows"):
            p.add_column(col, justify="right" if col == "rows" else "left")
        for d in parts:
            p.add_row(d["table"], d["partition"], d["start"], d["end"], f"{int(d['rows']):,}")
        console.print(p)
    else:
        console.print("partitions dropped: none")
    verb = "would be removed" if report["dry_run"] else "removed"
    console.print(f"total rows {verb}: {int(report['rows']):,}")
    if report["dry_run"]:
        console.print("dry run: nothing changed")


# -- audit -------------------------------------------------------------------------------------
def _valid_action(action: str | None) -> str | None:
    if (
        action is not None
        and not action.replace("*", "").replace(".", "").replace("_", "").isalnum()
    ):
        raise typer.BadParameter("letters, digits, '.', '_' and '*' only")
    return action


def audit(
    action: Annotated[
        str | None,
        typer.Option(
            help="Only these actions, '*' as wildcard (e.g. 'erasure.*').",
            callback=_valid_action,
            show_default=False,
        ),
    ] = None,
    limit: LimitOpt = 100,
    before: Annotated[
        int | None, typer.Option(min=1, help="Entries older than this id (paging).")
    ] = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """The audit log, newest first: erasures, retention runs and other governance actions."""
    settings = make_settings(data_dir)
    client = running_server(settings)
    res: dict[str, Any]
    if client is not None:
        res = api_call(
            lambda: client.get("/v1/audit", action=action, limit=limit, before=before), client
        )
    else:
        with _store(settings) as store:
            rows = store.audit_entries(limit=limit, action=action, before_id=before)
        res = {
            "items": [e.as_dict() for e in rows],
            "next_before": rows[-1].id if len(rows) == limit else None,
        }
    if json:
        print_json(res)
        return
    items = res["items"]
    t = Table(title=f"{len(items)} audit entr{'y' if len(items) == 1 else 'ies'}, newest first")
    for col in ("id", "at", "actor", "action", "target", "detail"):
        t.add_column(col, justify="right" if col == "id" else "left", overflow="fold")
    for e in items:
        detail = orjson.dumps(e["detail"], option=orjson.OPT_SORT_KEYS).decode()
        t.add_row(
            str(e["id"]),
            e["at"],
            e["actor"],
            e["action"],
            e["target"],
            detail if len(detail) <= 80 else detail[:79] + "…",
        )
    console.print(t)
    if res.get("next_before"):
        console.print(f"older entries: --before {res['next_before']}")
