"""Erasure reaches every place a subject lives and stays erased (embedded default: DuckDB and
the SQLite log). Every check is independent of the erasure code: plain SQL over the tables,
a byte scan of the data directory's files, the metrics API's unique-user answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlglot import exp

from gristmill.api.app import create_app
from gristmill.config import ClickHouseSettings, PostgresSettings
from gristmill.core.subjects import Mode
from gristmill.governance.erasure import ErasureIncomplete, Subject, erase, needles
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.governance_fixtures import (
    BASE,
    EMAIL,
    OTHERS,
    SUBJECT,
    files_containing,
    platform_event,
    rows_of,
    send,
    unique_users,
    users_events,
)
from tests.pg import scratch_database

LOGIN = {"login_method": "github"}
WINDOW = (BASE - timedelta(hours=1), BASE + timedelta(hours=4))


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = make_settings(tmp_path / "d", packs=["platform"], server={"metrics_allow": ["*"]})
    runtime = Runtime(settings)
    yield runtime
    runtime.stop()


def _metrics(client: TestClient, key: str) -> dict[str, Any]:
    r = client.get(
        "/v1/metrics",
        params={
            "metrics": "unique_users,events",
            "start": WINDOW[0].isoformat(),
            "end": WINDOW[1].isoformat(),
        },
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body["rows"][0] if body["rows"] else {}


def _quarantine_bad_event(rt: Runtime, user: str) -> None:
    """A schema violation carrying the subject: quarantined with its original bytes."""
    bad = platform_event("project.created", user, BASE, 99, props={"budget": "lots"})
    send(rt, [bad])


def test_delete_reaches_rows_rollups_quarantine_log_and_stays_erased(rt: Runtime) -> None:
    send(rt, users_events(BASE))
    _quarantine_bad_event(rt, SUBJECT)
    # In the log, not loaded yet, when the request comes.
    send(rt, [platform_event("user.login", SUBJECT, BASE, 50, props=LOGIN)], drain=False)
    admin = rt.meta.create_key("secret", "adm", pack="platform", role="admin")[1]
    with TestClient(create_app(rt, start=False)) as client:
        # An export not yet downloaded holds the subject's rows too.
        job = client.post(
            "/v1/exports/platform/events_window",
            json={"start": WINDOW[0].isoformat(), "end": WINDOW[1].isoformat(), "as_job": True},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert job.status_code == 202, job.text
        rt.exports.run_pending()
        assert rt.exports.job(rt.keys.resolve(admin), job.json()["id"]).status == "succeeded"  # type: ignore[arg-type]
        before = _metrics(client, admin)
        assert before["unique_users"] == 4 == unique_users(rt, *WINDOW)
        others_before = {u: rows_of(rt, u) for u in OTHERS}

        rid = rt.governance.request_erasure(Subject((SUBJECT,), (), (EMAIL,)), Mode.DELETE, "t")
        rt.governance.run_pending()
        record = rt.governance.status(rid)
        assert record is not None
        assert record.status == "completed", record
        report = record.report
        assert report["rows_total"] == 3 * 2 + 1 + 1, (
            report
        )  # logins, projects, registered, backlog
        assert report["quarantine_items"] == 1
        assert report["exports"] == {"pending": 1, "delivered": 0, "scanned": 1}
        assert report["within_deadline"] is True
        assert {r["rollup"] for r in report["rollups"]} == {
            "platform.platform_hourly",
            "platform.platform_daily",
        }

        after = _metrics(client, admin)
        assert after["unique_users"] == 3 == unique_users(rt, *WINDOW)
        assert after["events"] == before["events"] - report["rows_total"] + 1  # +1: backlog
        assert rows_of(rt, SUBJECT) == 0
        assert {u: rows_of(rt, u) for u in OTHERS} == others_before
        keys = rt.warehouse.query_sql("SELECT count(*) AS n FROM platform._gm_dedupe")
        assert int(keys.column("n")[0].as_py()) == 3 * 7  # the other users' keys only
        q = client.get("/v1/quarantine", headers={"Authorization": f"Bearer {admin}"}).json()
        assert all(SUBJECT.encode() not in orjson.dumps(i) for i in q["items"])

        # Stays erased: a re-send, a backfill and a quarantine-worthy event load nothing.
        again = users_events(BASE + timedelta(days=1), (SUBJECT,))
        got = send(rt, again)
        assert got == {"accepted": 0, "suppressed": len(again)}
        _quarantine_bad_event(rt, SUBJECT)
        assert rows_of(rt, SUBJECT) == 0
        cons = rt.conservation()
        assert cons.balanced
        assert cons.total("suppressed") == len(again) + 1

        entries = rt.governance.store.audit_entries(action="erasure.*")
        assert [e.action for e in entries] == ["erasure.completed", "erasure.requested"]
        assert SUBJECT not in orjson.dumps([e.as_dict() for e in entries]).decode()

    rt.stop()
    data_dir = rt.settings.data_dir
    ids = [SUBJECT, EMAIL]
    # The warehouse file is DuckDB's: its deleted rows are not scanned here (tables are).
    leftovers = [
        h for h in files_containing(data_dir, needles(ids)) if not h.startswith("warehouse")
    ]
    assert leftovers == []


def test_anonymize_keeps_events_counted_without_identity(rt: Runtime) -> None:
    send(rt, users_events(BASE))
    total_before = sum(rows_of(rt, u) for u in (SUBJECT, *OTHERS))
    rid = rt.governance.request_erasure(Subject((SUBJECT,)), Mode.ANONYMIZE, "t")
    rt.governance.run_pending()
    record = rt.governance.status(rid)
    assert record is not None
    assert record.status == "completed", record
    assert rows_of(rt, SUBJECT) == 0
    rows = rt.warehouse.query_sql(
        "SELECT properties, context FROM platform.platform_events WHERE user_id IS NULL"
    ).to_pylist()
    assert len(rows) == 7
    for r in rows:
        assert EMAIL not in str(r["properties"])
        assert "phone" not in str(r["properties"])
        assert r["context"] is None or "203.0.113.9" not in str(r["context"])
    assert sum(rows_of(rt, u) for u in OTHERS) + len(rows) == total_before
    assert unique_users(rt, *WINDOW) == 3
    # A later event of the subject lands anonymized, not dropped.
    got = send(
        rt,
        [
            platform_event(
                "user.login", SUBJECT, BASE, 77, props=LOGIN, context={"ip": "203.0.113.9"}
            )
        ],
    )
    assert got == {"accepted": 1, "suppressed": 0}
    assert rows_of(rt, SUBJECT) == 0


def test_erasure_api_lifecycle_and_permissions(rt: Runtime) -> None:
    send(rt, users_events(BASE))
    admin = rt.meta.create_key("secret", "adm", pack="platform", role="admin")[1]
    operator = rt.meta.create_key("secret", "op", role="operator")[1]
    with TestClient(create_app(rt)) as client:  # started: the worker runs the job
        r = client.post(
            "/v1/erasure",
            json={"user_ids": [SUBJECT]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        r = client.post("/v1/erasure", json={}, headers={"Authorization": f"Bearer {operator}"})
        assert r.status_code == 422
        r = client.post(
            "/v1/erasure",
            json={"user_ids": [SUBJECT], "mode": "delete"},
            headers={"Authorization": f"Bearer {operator}"},
        )
        assert r.status_code == 202, r.text
        rid = r.json()["request_id"]
        assert r.headers["location"] == f"/v1/erasure/{rid}"
        deadline = time.monotonic() + 60
        while True:
            body = client.get(
                f"/v1/erasure/{rid}", headers={"Authorization": f"Bearer {operator}"}
            ).json()
            if body["status"] in ("completed", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert body["status"] == "completed", body
        assert body["report"]["rows_total"] == 7
        assert body["seconds"] is not None
        assert rows_of(rt, SUBJECT) == 0
        missing = client.get(
            "/v1/erasure/era_nope", headers={"Authorization": f"Bearer {operator}"}
        )
        assert missing.status_code == 404
        audit = client.get("/v1/audit", headers={"Authorization": f"Bearer {operator}"}).json()
        actions = [e["action"] for e in audit["items"]]
        assert "erasure.completed" in actions
        assert "key.created" in actions
        text = client.get("/metrics").text
        assert 'gristmill_erasure_requests_total{status="completed"} 1.0' in text
        assert "gristmill_erasure_rows_total 7.0" in text


def test_a_restart_resumes_an_unfinished_request(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d", packs=["platform"])
    first = Runtime(settings)
    send(first, users_events(BASE))
    rid = first.governance.request_erasure(Subject((SUBJECT,)), Mode.DELETE, "t")
    first.stop()  # before the job ran: the request is pending, the subject suppressed
    second = Runtime(settings)
    try:
        got = send(second, [platform_event("user.login", SUBJECT, BASE, 5, props=LOGIN)])
        assert got["suppressed"] == 1
        second.governance.resume_unfinished()
        assert second.governance.run_pending() == [rid]
        record = second.governance.status(rid)
        assert record is not None
        assert record.status == "completed"
        assert rows_of(second, SUBJECT) == 0
    finally:
        second.stop()


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("clickhouse", marks=pytest.mark.clickhouse),
    ],
)
@pytest.mark.parametrize("mode", [Mode.DELETE, Mode.ANONYMIZE])
def test_erasure_on_every_engine(tmp_path: Path, engine: str, mode: Mode) -> None:
    with ExitStack() as stack:
        overrides: dict[str, Any] = {}
        if engine == "postgres":
            dsn = stack.enter_context(scratch_database())
            overrides["warehouse"] = PostgresSettings(dsn=dsn)
        else:
            overrides["warehouse"] = ClickHouseSettings()
        rt = Runtime(make_settings(tmp_path / "d", packs=["platform"], **overrides))
        stack.callback(rt.stop)
        send(rt, users_events(BASE))
        _quarantine_bad_event(rt, SUBJECT)
        total = sum(rows_of(rt, u) for u in (SUBJECT, *OTHERS))
        assert unique_users(rt, *WINDOW) == 4
        rid = rt.governance.request_erasure(Subject((SUBJECT,), (), (EMAIL,)), mode, "t")
        rt.governance.run_pending()
        record = rt.governance.status(rid)
        assert record is not None
        assert record.status == "completed", record
        assert record.report["rows_total"] == 7
        assert record.report["quarantine_items"] == 1
        assert rows_of(rt, SUBJECT) == 0
        assert unique_users(rt, *WINDOW) == 3
        anonymous = int(
            rt.warehouse.query_sql(
                "SELECT count(*) AS n FROM platform.platform_events WHERE user_id IS NULL"
            )
            .column("n")[0]
            .as_py()
        )
        keys = rt.warehouse.query_sql("SELECT count(*) AS n FROM platform._gm_dedupe")
        kept = int(keys.column("n")[0].as_py())
        if mode is Mode.DELETE:
            assert anonymous == 0
            assert sum(rows_of(rt, u) for u in OTHERS) == total - 7
            assert kept == total - 7  # the erased rows' dedupe keys went with them
        else:
            assert anonymous == 7
            text = rt.warehouse.query_sql(
                "SELECT properties FROM platform.platform_events WHERE user_id IS NULL"
            ).to_pylist()
            assert all(EMAIL not in str(r["properties"]) for r in text)


def test_erasure_reaches_feed_staging(tmp_path: Path) -> None:
    """Rows of a feed whose transform failed stay staged for inspection: an identifier in
    one of their text fields (here an order id that is an email) is erased there too."""
    from tests.integration.feeds_fixtures import Feeds, feeds_fixture

    gen = feeds_fixture.__wrapped__(tmp_path)  # type: ignore[attr-defined]
    feeds: Feeds = next(gen)
    try:
        csv = (
            b"transaction_date,product_name,quantity,price,discount,order_id\n"
            b"2025-01-05,Latte,2,3.50,0.50,ann@example.org\n"
            b"2025-01-05,Latte,1,3.50,,o-2\n"
        )
        token = feeds.preview("b1", "s.csv", csv).json()["upload_token"]
        up = feeds.rt.feeds.upload_for(token, "1")
        res = feeds.rt.feeds.commit(up, auto_create_products=True, queue=False)
        stage = "sales_feeds.staging_sales_items"
        fact = "sales_feeds.fact_sales"
        feeds.rt.warehouse.query_sql(f"ALTER TABLE {fact} RENAME TO fact_sales_away")
        assert feeds.rt.feeds.transformer.run(res.feed_id) == "failed"
        feeds.rt.warehouse.query_sql(f"ALTER TABLE {fact}_away RENAME TO fact_sales")

        def staged() -> int:
            got = feeds.rt.warehouse.query_sql(f"SELECT count(*) AS n FROM {stage}")
            return int(got.column("n")[0].as_py())

        assert staged() == 2
        rid = feeds.rt.governance.request_erasure(
            Subject((), (), ("ann@example.org",)), Mode.DELETE, "t"
        )
        feeds.rt.governance.run_pending()
        record = feeds.rt.governance.status(rid)
        assert record is not None
        assert record.status == "completed", record
        assert {"table": stage, "rows": 1, "action": "deleted (feed staging)"} in record.report[
            "tables"
        ]
        assert staged() == 1
    finally:
        gen.close()


class SkipsUpdates:
    """The runtime's DuckDB warehouse, except that UPDATEs report their rows without
    changing them: what ClickHouse's rewritten UPDATE did, until 2026-12-07, to rows an
    earlier UPDATE had rewritten (an erasure after a reprice)."""

    def __init__(self, wh: Any) -> None:
        self._wh = wh

    def execute_all(self, stmts: Any) -> list[int]:
        return self._wh.execute_all([s for s in stmts if not isinstance(s[0], exp.Update)])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wh, name)


def test_rows_left_after_the_statements_fail_the_request(rt: Runtime) -> None:
    """The rows step reads back what it erased: a statement the engine reported as done but
    did not do leaves rows naming the subject, and the request fails saying so instead of
    completing with a receipt that says they are anonymized."""
    send(rt, users_events(BASE))
    before = rows_of(rt, SUBJECT)
    assert before > 0
    with pytest.raises(ErasureIncomplete, match=r"rows of platform\.platform_events still name"):
        erase(SkipsUpdates(rt.warehouse), rt.packs, [SUBJECT], Mode.ANONYMIZE, wait_loaded=dict)
    assert rows_of(rt, SUBJECT) == before
    report = erase(rt.warehouse, rt.packs, [SUBJECT], Mode.ANONYMIZE, wait_loaded=dict)
    assert rows_of(rt, SUBJECT) == 0
    assert report.tables[0]["action"] == "anonymized"


def test_anonymize_strips_subject_properties_the_pack_does_not_list_as_pii(rt: Runtime) -> None:
    """A property that names a subject (``subject_properties``) is stripped by anonymize even
    when ``pii.properties`` leaves it out: else the row would still name the erased subject,
    and the read-back would fail the request."""
    pack = rt.packs["platform"]
    gov = pack.spec.governance
    assert "email" in gov.subject_properties
    listed = list(gov.pii.properties)
    gov.pii.properties.remove("email")
    try:
        assert "email" in gov.stripped_properties
        send(rt, users_events(BASE))
        rid = rt.governance.request_erasure(Subject((), (), (EMAIL,)), Mode.ANONYMIZE, "t")
        rt.governance.run_pending()
        record = rt.governance.status(rid)
        assert record is not None
        assert record.status == "completed", record
        props = rt.warehouse.query_sql(
            "SELECT properties FROM platform.platform_events WHERE user_id IS NULL"
        ).to_pylist()
        assert props
        assert all(EMAIL not in str(r["properties"]) for r in props)
    finally:
        gov.pii.properties[:] = listed
