"""The CLI: keys, status and quarantine offline, and against a running server; the demo."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from gristmill.cli import app
from gristmill.demo.process import ServerProcess, free_port
from gristmill.meta.store import MetaStore
from tests.conftest import PACKS
from tests.factories import order


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("GRISTMILL_PACKS_DIR", str(PACKS))
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def test_keys_create_list_revoke(cli: CliRunner, tmp_path: Path) -> None:
    r = cli.invoke(app, ["keys", "create", "--pack", "marketplace", "--source", "web", "--json"])
    assert r.exit_code == 0, r.output
    created = orjson.loads(r.output)
    assert created["token"].startswith("gmw_")
    store = MetaStore(f"sqlite:///{tmp_path / 'data' / 'meta.sqlite'}")
    key = store.lookup_key(created["token"])
    assert key is not None
    assert key.pack == "marketplace"
    assert key.source == "web"
    listing = orjson.loads(cli.invoke(app, ["keys", "list", "--json"]).output)
    assert [k["key_id"] for k in listing] == [created["key_id"]]
    assert created["token"] not in cli.invoke(app, ["keys", "list"]).output
    assert cli.invoke(app, ["keys", "revoke", created["key_id"]]).exit_code == 0
    assert orjson.loads(cli.invoke(app, ["keys", "list", "--json"]).output) == []
    assert cli.invoke(app, ["keys", "revoke", created["key_id"]]).exit_code == 1
    store.close()


def test_keys_create_refuses_bad_input(cli: CliRunner) -> None:
    assert "needs --pack" in cli.invoke(app, ["keys", "create"]).output
    r = cli.invoke(
        app, ["keys", "create", "--kind", "secret", "--role", "vendor", "--pack", "marketplace"]
    )
    assert r.exit_code == 1
    assert "needs claims: store_id" in r.output
    r = cli.invoke(app, ["keys", "create", "--kind", "secret", "--role", "operator", "--json"])
    assert orjson.loads(r.output)["token"].startswith("gms_")


def test_status_and_quarantine_offline_and_online(cli: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = cli.invoke(app, ["keys", "create", "--pack", "marketplace", "--json"])
    token = orjson.loads(r.output)["token"]
    offline = orjson.loads(cli.invoke(app, ["status", "--json"]).output)
    assert offline["server"] is None
    assert offline["totals"]["received"] == 0

    server = ServerProcess(data, free_port(), packs_dir=PACKS)
    server.start()
    try:
        import httpx

        body = orjson.dumps([order(), order("order_refunded")])
        resp = httpx.post(
            server.url + "/v1/events", content=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 207
        import time

        deadline = time.monotonic() + 10
        while True:
            online = orjson.loads(cli.invoke(app, ["status", "--json"]).output)
            if online["totals"]["in_flight"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert online["server"] == server.url
        assert online["totals"] == {
            "received": 2,
            "loaded": 1,
            "quarantined": 1,
            "duplicates": 0,
            "in_flight": 0,
            "suppressed": 0,
        }
        waited = online["loader"]["last_wait_seconds"]  # the wait the last batch took
        assert isinstance(waited, float)
        assert waited >= 0.0
        # Why it stopped waiting, when it waited: full, wait, quiet, drain or stop.
        assert online["loader"]["last_wait_ended"] in {None, "full", "wait", "quiet", "drain"}
        shown_text = cli.invoke(app, ["status"]).output
        assert "balanced" in shown_text
        assert "last batch waited" in shown_text
        rows = orjson.loads(cli.invoke(app, ["quarantine", "list", "--json"]).output)
        assert [r["reason"] for r in rows] == ["unknown_event_type"]
        shown = orjson.loads(
            cli.invoke(app, ["quarantine", "show", rows[0]["quarantine_id"]]).output
        )
        assert orjson.loads(shown["raw"])["event_type"] == "order_refunded"
        out = cli.invoke(app, ["quarantine", "replay", "--reason", "unknown_event_type"]).output
        assert "1 rejected again" in out
    finally:
        server.stop()  # the replay's reject is in the log: the loader loads it before exiting
    rows = orjson.loads(cli.invoke(app, ["quarantine", "list", "--json"]).output)
    assert [r["reason"] for r in rows] == ["unknown_event_type"]  # the replay's own reject
    assert "nothing" not in cli.invoke(app, ["quarantine", "replay"]).output


def test_demo_runs_end_to_end(cli: CliRunner, tmp_path: Path) -> None:
    d = tmp_path / "demo"
    r = cli.invoke(
        app,
        [
            "demo",
            "--data-dir",
            str(d),
            "--events",
            "6000",
            "--days",
            "10",
            "--port",
            str(free_port()),
            "--no-serve",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "end to end" in r.output
    assert "write key (backend)" in r.output
    # A second run recreates its own directory; a foreign directory is refused.
    r = cli.invoke(
        app,
        [
            "demo",
            "--data-dir",
            str(d),
            "--events",
            "2000",
            "--days",
            "5",
            "--port",
            str(free_port()),
            "--no-serve",
        ],
    )
    assert r.exit_code == 0, r.output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "x").write_text("keep me")
    r = cli.invoke(app, ["demo", "--data-dir", str(foreign), "--no-serve"])
    assert r.exit_code == 1
    assert (foreign / "x").exists()


def test_query_offline_with_explain(cli: CliRunner, tmp_path: Path) -> None:
    from gristmill.runtime import Runtime
    from tests.conftest import make_settings

    rt = Runtime(make_settings(tmp_path / "data"))
    p = rt.collector.prepare(
        pack="marketplace",
        source="web",
        dialect="native",
        raw=orjson.dumps([order(amount=1500), order(amount=2500)]),
    )
    rt.collector.submit_sync(p)
    rt.loader.drain()
    rt.stop()
    r = cli.invoke(
        app,
        [
            "query",
            "--metrics",
            "orders,gmv_cents,aov_cents",
            "--start",
            "2026-11-01T00:00:00Z",
            "--end",
            "2026-11-02T00:00:00Z",
            "--json",
            "--explain",
        ],
    )
    assert r.exit_code == 0, r.output
    data = orjson.loads(r.output)
    assert data["rows"] == [{"orders": 2, "gmv_cents": 4000, "aov_cents": 2000.0}]
    assert data["debug"][0]["path"] == "rollup"
    r = cli.invoke(app, ["query", "--metrics", "nope"])
    assert r.exit_code == 1
    assert "unknown metric" in r.output
