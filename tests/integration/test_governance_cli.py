"""The governance CLI: ``erase``, ``erasure status|list``, ``retention run`` and ``audit``,
offline (the command opens the files) and against a running server. Counts are checked with
plain SQL over the pack table, independent of the erasure code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from gristmill.cli import app
from gristmill.demo.process import ServerProcess, free_port
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.integration.governance_fixtures import platform_event, rows_of, send

NOW = datetime.now(UTC).replace(microsecond=0)
RECENT = NOW - timedelta(days=2)
OLD = NOW - timedelta(days=3 * 365)
"""Past user_activity's 2-year retention in the platform pack."""

U1_EVENTS = 3
U2_RECENT = 2
LOGIN = {"login_method": "github"}


def _events() -> list[dict[str, Any]]:
    out = [
        platform_event("user.login", "u1", RECENT + timedelta(hours=i), i, props=LOGIN)
        for i in range(U1_EVENTS)
    ]
    out += [
        platform_event("user.login", "u2", RECENT + timedelta(hours=i), i, props=LOGIN)
        for i in range(U2_RECENT)
    ]
    out.append(platform_event("user.login", "u2", OLD, 99, props=LOGIN))
    return out


@pytest.fixture
def data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("GRISTMILL_PACKS_DIR", str(PACKS))
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(d))
    monkeypatch.setenv("GRISTMILL_PACKS", '["platform"]')
    monkeypatch.setenv("COLUMNS", "200")
    rt = Runtime(make_settings(d, packs=["platform"]))
    try:
        assert send(rt, _events()) == {"accepted": U1_EVENTS + U2_RECENT + 1, "suppressed": 0}
        assert (rows_of(rt, "u1"), rows_of(rt, "u2")) == (U1_EVENTS, U2_RECENT + 1)
    finally:
        rt.stop()
    return d


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def _rows(d: Path) -> tuple[int, int]:
    rt = Runtime(make_settings(d, packs=["platform"]))
    try:
        return rows_of(rt, "u1"), rows_of(rt, "u2")
    finally:
        rt.stop()


def _json(r: Result) -> Any:
    assert r.exit_code == 0, r.output
    return orjson.loads(r.stdout)


def _run(cli: CliRunner, *args: str) -> Any:
    return _json(cli.invoke(app, list(args)))


def _one_line_error(r: Result, text: str) -> None:
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: ")
    assert text in lines[0]


def test_erase_offline_receipt_list_status_audit(cli: CliRunner, data: Path) -> None:
    rec = _run(cli, "erase", "--user-id", "u1", "--json")
    assert rec["status"] == "completed"
    assert rec["mode"] == "delete"
    assert rec["subjects"] == 1
    assert rec["requested_by"] == "cli"
    assert rec["error"] is None
    report = rec["report"]
    assert report["rows_total"] == U1_EVENTS
    assert report["tables"] == [
        {"table": "platform.platform_events", "rows": U1_EVENTS, "action": "deleted"}
    ]
    assert {r["rollup"] for r in report["rollups"]} == {
        "platform.platform_hourly",
        "platform.platform_daily",
    }
    assert report["quarantine_items"] == 0
    assert report["within_deadline"] is True
    assert _rows(data) == (0, U2_RECENT + 1)
    request_id = rec["request_id"]

    listing = _run(cli, "erasure", "list", "--json")["items"]
    assert [(r["request_id"], r["status"]) for r in listing] == [(request_id, "completed")]
    assert _run(cli, "erasure", "list", "--status", "pending", "--json") == {"items": []}
    shown = _run(cli, "erasure", "status", request_id, "--json")
    assert shown["status"] == "completed"
    assert shown["report"]["rows_total"] == U1_EVENTS

    entries = _run(cli, "audit", "--json")["items"]
    assert [(e["action"], e["target"], e["actor"]) for e in entries] == [
        ("erasure.completed", request_id, "gristmill"),
        ("erasure.requested", request_id, "cli"),
    ]
    assert entries[0]["id"] > entries[1]["id"]  # newest first
    assert entries[0]["detail"]["report"]["rows_total"] == U1_EVENTS
    only = _run(cli, "audit", "--action", "erasure.req*", "--json")["items"]
    assert [e["action"] for e in only] == ["erasure.requested"]
    page = _run(cli, "audit", "--limit", "1", "--json")
    assert len(page["items"]) == 1
    assert page["next_before"] == entries[0]["id"]
    older = _run(cli, "audit", "--before", str(page["next_before"]), "--json")["items"]
    assert [e["id"] for e in older] == [entries[1]["id"]]

    # The tables people read.
    out = cli.invoke(app, ["erasure", "status", request_id]).stdout
    assert f"erasure {request_id}: completed" in out
    assert "platform.platform_events" in out
    assert "deleted" in out
    assert "quarantine items deleted: 0" in out
    assert "within the 3600 s deadline" in out
    out = cli.invoke(app, ["erasure", "list"]).stdout
    assert "1 erasure request(s)" in out
    assert request_id in out
    out = cli.invoke(app, ["audit"]).stdout
    assert "2 audit entries, newest first" in out
    assert "erasure.requested" in out


def test_erase_anonymize_by_several_identifiers(cli: CliRunner, data: Path) -> None:
    r = cli.invoke(
        app,
        ["erase", "--user-id", "u2", "--anonymous-id", "anon-x", "--mode", "anonymize"],
    )
    assert r.exit_code == 0, r.output
    assert "anonymized" in r.stdout
    assert "completed (anonymize, 2 identifier hash(es)" in r.stdout
    assert _rows(data) == (U1_EVENTS, 0)
    rt = Runtime(make_settings(data, packs=["platform"]))
    try:
        # anonymized rows keep their event, without identity
        counts = rt.warehouse.query_sql(
            "SELECT count(*) AS n, count(user_id) AS named FROM platform.platform_events"
        ).to_pylist()
        assert counts == [{"n": U1_EVENTS + U2_RECENT + 1, "named": U1_EVENTS}]
    finally:
        rt.stop()


def test_erase_refuses_without_identifiers(cli: CliRunner, data: Path) -> None:
    _one_line_error(cli.invoke(app, ["erase"]), "name at least one --user-id")
    _one_line_error(cli.invoke(app, ["erase", "--user-id", "  "]), "name at least one")
    _one_line_error(cli.invoke(app, ["erasure", "status", "era_nope"]), "no erasure request")
    assert _run(cli, "erasure", "list", "--json") == {"items": []}  # nothing was recorded
    assert _run(cli, "audit", "--json")["items"] == []
    assert _rows(data) == (U1_EVENTS, U2_RECENT + 1)
    r = cli.invoke(app, ["audit", "--action", "x; drop"])
    assert r.exit_code == 2
    assert "Traceback" not in r.output


def test_status_and_list_are_read_only(cli: CliRunner, data: Path) -> None:
    """A request recorded with --no-wait stays pending under status/list; the next offline
    ``erase`` runs it (the subject is suppressed from the start)."""
    rec = _run(cli, "erase", "--user-id", "u1", "--no-wait", "--json")
    assert rec["status"] == "pending"
    first = rec["request_id"]
    for _ in range(2):
        assert _run(cli, "erasure", "status", first, "--json")["status"] == "pending"
        pending = _run(cli, "erasure", "list", "--status", "pending", "--json")["items"]
        assert [r["request_id"] for r in pending] == [first]
    assert _rows(data) == (U1_EVENTS, U2_RECENT + 1)

    second = _run(cli, "erase", "--user-id", "u2", "--json")
    assert second["status"] == "completed"
    assert second["report"]["rows_total"] == U2_RECENT + 1
    again = _run(cli, "erasure", "status", first, "--json")
    assert again["status"] == "completed"
    assert again["report"]["rows_total"] == U1_EVENTS
    assert _rows(data) == (0, 0)
    assert _run(cli, "erasure", "list", "--status", "pending", "--json") == {"items": []}


def test_retention_dry_run_changes_nothing_then_run(cli: CliRunner, data: Path) -> None:
    dry = _run(cli, "retention", "run", "--dry-run", "--json")
    assert dry["dry_run"] is True
    assert dry["rows"] == 1
    by = {(a["table"], a["category"], a["method"]): a["rows"] for a in dry["actions"]}
    assert by == {
        ("platform.platform_events", "content", "delete"): 0,
        ("platform.platform_events", "interaction", "delete"): 0,
        ("platform.platform_events", "transaction", "delete"): 0,
        ("platform.platform_events", "user_activity", "delete"): 1,
        ("_gristmill.quarantine", "*", "delete"): 0,
    }
    assert dry["partitions_dropped"] == []
    assert _rows(data) == (U1_EVENTS, U2_RECENT + 1)
    out = cli.invoke(app, ["retention", "run", "--dry-run"]).stdout
    assert "user_activity" in out
    assert "total rows would be removed: 1" in out
    assert "dry run: nothing changed" in out
    assert _rows(data) == (U1_EVENTS, U2_RECENT + 1)

    done = _run(cli, "retention", "run", "--json")
    assert done["dry_run"] is False
    assert done["rows"] == 1
    assert _rows(data) == (U1_EVENTS, U2_RECENT)
    assert _run(cli, "retention", "run", "--json")["rows"] == 0
    actions = [
        e["action"] for e in _run(cli, "audit", "--action", "retention.*", "--json")["items"]
    ]
    assert actions == ["retention.run", "retention.run", "retention.dry_run", "retention.dry_run"]


def test_against_a_running_server(cli: CliRunner, data: Path) -> None:
    server = ServerProcess(data, free_port(), packs_dir=PACKS)
    server.start()
    try:
        rec = _run(cli, "erase", "--user-id", "u1", "--json")
        assert rec["status"] == "completed"
        assert rec["requested_by"] == "local:operator"
        assert rec["report"]["rows_total"] == U1_EVENTS
        listing = _run(cli, "erasure", "list", "--json")["items"]
        assert [r["request_id"] for r in listing] == [rec["request_id"]]
        shown = _run(cli, "erasure", "status", rec["request_id"], "--json")
        assert shown["report"]["tables"] == rec["report"]["tables"]
        _one_line_error(cli.invoke(app, ["erasure", "status", "era_nope"]), "404")
        dry = _run(cli, "retention", "run", "--dry-run", "--json")
        assert (dry["dry_run"], dry["rows"]) == (True, 1)
        items = _run(cli, "audit", "--json")["items"]
        actions = [e["action"] for e in items if not e["action"].endswith(".read")]
        assert actions == ["retention.dry_run", "erasure.completed", "erasure.requested"]
        # Every read through the server is in the trail too, with the caller and the result.
        reads = [e for e in items if e["action"] == "governance.read"]
        assert {e["target"] for e in reads} >= {"/v1/erasure", f"/v1/erasure/{rec['request_id']}"}
        assert {(e["actor"], e["role"]) for e in reads} == {("local:operator", "operator")}
        assert any(e["result"] == 404 for e in reads)  # the unknown request id
    finally:
        server.stop()
    assert _rows(data) == (0, U2_RECENT + 1)  # the dry run changed nothing
