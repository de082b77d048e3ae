"""Exports over the loaded marketplace warehouse (DuckDB): rows streamed or as a job, metric
reports reconciled to the metric layer, scope and roles, signed local links, idempotency."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gristmill.exports.signing import sign
from gristmill.runtime import Runtime
from tests.integration.analytics_fixtures import Loaded

ROWS = "/v1/exports/marketplace/marketplace_rows"
DAILY = "/v1/exports/marketplace/vendor_daily"


def post(loaded: Loaded, who: str, url: str, body: dict[str, Any]) -> Any:
    return loaded.client.post(
        url, json=body, headers={"Authorization": f"Bearer {loaded.keys[who]}"}
    )


def parse(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def sql_rows(
    rt: Runtime, start: datetime, end: datetime, vendor: str | None = None, etype: str | None = None
) -> list[dict[str, Any]]:
    """The window's rows by a plain SQL query on the same DuckDB."""
    where = "occurred_at >= $s AND occurred_at < $e"
    params: dict[str, Any] = {"s": start, "e": end}
    if vendor is not None:
        where += " AND vendor_store_id = $v"
        params["v"] = vendor
    if etype is not None:
        where += " AND event_type = $t"
        params["t"] = etype
    sql = (
        "SELECT event_id, source, event_type, occurred_at, vendor_store_id, amount_cents "
        f"FROM marketplace.marketplace_events WHERE {where} "
        "ORDER BY occurred_at, event_id, source, event_type, loaded_at"
    )
    return rt.warehouse.query_sql(sql, params).to_pylist()


def same_rows(got: list[dict[str, str]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["event_id"] == w["event_id"]
        assert g["source"] == w["source"]
        assert g["event_type"] == w["event_type"]
        assert datetime.fromisoformat(g["occurred_at"]) == w["occurred_at"]
        assert g["vendor_store_id"] == (w["vendor_store_id"] or "")
        assert g["amount_cents"] == ("" if w["amount_cents"] is None else str(w["amount_cents"]))


def day_window(loaded: Loaded, days_ago: int, days: int = 1) -> tuple[datetime, datetime]:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days_ago)
    return start, start + timedelta(days=days)


def previous_month() -> str:
    first = datetime.now(UTC).replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def run_jobs(loaded: Loaded) -> None:
    loaded.rt.exports.run_pending()


def test_small_window_streams_exactly_the_rows_of_the_window(loaded: Loaded) -> None:
    start, end = day_window(loaded, 3)
    r = post(loaded, "admin", ROWS, {"start": start.isoformat(), "end": end.isoformat()})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    got = parse(r.content)
    want = sql_rows(loaded.rt, start, end)
    assert want  # the fixture has traffic every day
    same_rows(got, want)
    assert int(r.headers["x-export-rows"]) == len(want)
    assert r.content.startswith(b"event_id,event_type,schema_version,occurred_at,")
    assert b"properties" not in r.content.split(b"\r\n", 1)[0]  # JSON columns left out


def test_vendor_sees_only_its_store_and_filters_apply(loaded: Loaded) -> None:
    start, end = day_window(loaded, 10, 7)
    body = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "filters": {"event_type": "order_paid"},
    }
    r = post(loaded, "vendor_a", ROWS, body)
    assert r.status_code == 200, r.text
    same_rows(parse(r.content), sql_rows(loaded.rt, start, end, "vnd_000", "order_paid"))


def test_foreign_scope_is_404_and_wrong_role_403(loaded: Loaded) -> None:
    month = previous_month()
    r = post(loaded, "vendor_a", DAILY, {"period": month, "scope": {"vendor_store_id": "vnd_001"}})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    start, end = day_window(loaded, 3)
    r = post(loaded, "writer", ROWS, {"start": start.isoformat(), "end": end.isoformat()})
    assert r.status_code == 403
    assert r.json()["type"].endswith("/forbidden")
    r = post(
        loaded,
        "vendor_a",
        ROWS,
        {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "filters": {"vendor_store_id": "vnd_001"},
        },
    )
    assert r.status_code == 400  # not a filter of this export
    r = post(loaded, "admin", "/v1/exports/marketplace/nope", {"period": month})
    assert r.status_code == 404
    # A job of vendor B's scope does not exist for vendor A.
    b = post(loaded, "vendor_b", DAILY, {"period": month})
    assert b.status_code == 202, b.text
    job_id = b.json()["id"]
    hdr = {"Authorization": f"Bearer {loaded.keys['vendor_a']}"}
    assert loaded.client.get(f"/v1/exports/jobs/{job_id}", headers=hdr).status_code == 404
    listed = loaded.client.get("/v1/exports/jobs", headers=hdr).json()["items"]
    assert all(j["scope"] == {"vendor_store_id": "vnd_000"} for j in listed)
    admin = {"Authorization": f"Bearer {loaded.keys['admin']}"}
    assert loaded.client.get(f"/v1/exports/jobs/{job_id}", headers=admin).status_code == 202


def test_large_window_becomes_a_job_whose_file_is_the_window(loaded: Loaded) -> None:
    start, end = day_window(loaded, 40, 31)
    body = {"start": start.isoformat(), "end": end.isoformat()}
    r = post(loaded, "admin", ROWS, body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert r.headers["location"] == f"/v1/exports/jobs/{job['id']}"
    again = post(loaded, "admin", ROWS, body)
    assert again.json()["id"] == job["id"]  # idempotent at the same watermark
    run_jobs(loaded)
    hdr = {"Authorization": f"Bearer {loaded.keys['admin']}"}
    done = loaded.client.get(f"/v1/exports/jobs/{job['id']}", headers=hdr)
    assert done.status_code == 200
    d = done.json()
    assert d["status"] == "succeeded"
    assert d["attempts"] == 1
    assert d["reconciled"] is True
    data = loaded.client.get(d["url"]).content
    want = sql_rows(loaded.rt, start, end)
    assert len(want) > 2000  # past stream_max_rows
    same_rows(parse(data), want)
    assert d["rows"] == len(want)
    assert d["checksum"] == hashlib.sha256(data).hexdigest()
    manifest = loaded.client.get(d["manifest_url"]).json()
    assert manifest["sha256"] == d["checksum"]
    assert manifest["rows"] == len(want)
    assert manifest["totals"] == {"amount_cents": sum(w["amount_cents"] or 0 for w in want)}
    assert manifest["watermark"]["loaded_through"] == d["watermark"]
    assert "/_all/marketplace/marketplace_rows/" in d["object"]
    # the same request once the job succeeded still answers the same job
    assert post(loaded, "admin", ROWS, body).json()["id"] == job["id"]


def test_signed_links_refuse_tampering_and_expiry(loaded: Loaded) -> None:
    start, end = day_window(loaded, 2)
    r = post(
        loaded,
        "vendor_a",
        ROWS,
        {"start": start.isoformat(), "end": end.isoformat(), "as_job": True},
    )
    assert r.status_code == 202
    run_jobs(loaded)
    hdr = {"Authorization": f"Bearer {loaded.keys['vendor_a']}"}
    d = loaded.client.get(f"/v1/exports/jobs/{r.json()['id']}", headers=hdr).json()
    assert d["url"].startswith("http://testserver/v1/exports/download/")
    assert "/vnd_000/marketplace/" in d["object"]  # prefix_by: the vendor's own prefix
    assert loaded.client.get(d["url"]).status_code == 200
    token = d["url"].rsplit("/", 1)[1]
    payload, mac = token.split(".")
    other = "B" if payload[-1] == "A" else "A"  # a different last character, always
    forged = loaded.client.get(f"/v1/exports/download/{payload[:-1]}{other}.{mac}")
    assert forged.status_code == 403
    key = loaded.rt.exports._signing_key()
    past = int(datetime.now(UTC).timestamp()) - 1
    expired = loaded.client.get(f"/v1/exports/download/{sign(key, d['id'], 'csv', past)}")
    assert expired.status_code == 403
    assert "expired" in expired.json()["detail"]
    audit = loaded.rt.meta.governance.audit_entries(action="export.*", limit=1000)
    actions = {(a.action, a.target) for a in audit}
    assert ("export.download", d["id"]) in actions
    assert ("export.create", d["id"]) in actions


def metric_totals(
    loaded: Loaded, who: str, month: str, vendor: str | None = None
) -> dict[str, int]:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    params = {
        "metrics": "orders,gmv_cents,revenue_cents",
        "start": start.isoformat(),
        "end": end.isoformat(),
    }
    if vendor:
        params["filter"] = f"vendor_store_id:eq:{vendor}"
    r = loaded.client.get(
        "/v1/metrics", params=params, headers={"Authorization": f"Bearer {loaded.keys[who]}"}
    )
    assert r.status_code == 200, r.text
    row = r.json()["rows"][0]
    return {k: int(row[k]) for k in ("orders", "gmv_cents", "revenue_cents")}


@pytest.mark.parametrize(
    ("who", "scope", "vendor"),
    [
        ("admin", "all", None),
        ("admin", {"vendor_store_id": "vnd_001"}, "vnd_001"),
        ("vendor_a", "all", "vnd_000"),
    ],
)
def test_metrics_export_totals_equal_the_metric_layer(
    loaded: Loaded, who: str, scope: Any, vendor: str | None
) -> None:
    month = previous_month()
    r = post(loaded, who, DAILY, {"period": month, "scope": scope})
    assert r.status_code in (200, 202), r.text  # 200: the same job already finished
    run_jobs(loaded)
    hdr = {"Authorization": f"Bearer {loaded.keys[who]}"}
    d = loaded.client.get(f"/v1/exports/jobs/{r.json()['id']}", headers=hdr).json()
    assert d["status"] == "succeeded", d
    rows = parse(loaded.client.get(d["url"]).content)
    assert rows
    assert list(rows[0]) == [
        "day",
        "vendor_store_id",
        "orders",
        "gmv_cents",
        "revenue_cents",
    ]
    assert all(row["day"].startswith(month) for row in rows)
    if vendor:
        assert {row["vendor_store_id"] for row in rows} == {vendor}
        assert f"/{vendor}/marketplace/vendor_daily/{month}/" in d["object"]
    csv_totals = {
        c: sum(int(row[c]) for row in rows) for c in ("orders", "gmv_cents", "revenue_cents")
    }
    expected = metric_totals(loaded, "admin", month, vendor)
    assert csv_totals == expected
    assert d["totals"] == expected
    assert d["reconciled"] is True
    assert all(v["difference"] == 0 for v in d["reconciliation"]["columns"].values())
    again = loaded.client.get(f"/v1/exports/jobs/{d['id']}/reconcile", headers=hdr).json()
    assert again["reconciled"] is True
    assert again["differences"] == {}


def test_mtd_and_bad_periods(loaded: Loaded) -> None:
    r = post(loaded, "vendor_a", DAILY, {"period": "mtd"})
    assert r.status_code == 202
    assert r.json()["period"] == datetime.now(UTC).strftime("%Y-%m")
    assert r.json()["params"]["month_to_date"] is True
    assert post(loaded, "vendor_a", DAILY, {"period": "2999-01"}).status_code == 400
    assert post(loaded, "vendor_a", DAILY, {"period": "nope"}).status_code == 422
    start, end = day_window(loaded, 60, 40)
    too_long = post(loaded, "admin", ROWS, {"start": start.isoformat(), "end": end.isoformat()})
    assert too_long.status_code == 400


def test_list_pages_and_governance_hooks(loaded: Loaded) -> None:
    hdr = {"Authorization": f"Bearer {loaded.keys['operator']}"}
    first = loaded.client.get("/v1/exports/jobs", params={"limit": 1}, headers=hdr).json()
    assert len(first["items"]) == 1
    second = loaded.client.get(
        "/v1/exports/jobs", params={"limit": 1, "cursor": first["next_cursor"]}, headers=hdr
    ).json()
    assert second["items"][0]["id"] != first["items"][0]["id"]
    run_jobs(loaded)
    pending = loaded.rt.exports.pending_files()
    assert all(p.startswith("file://") for p in pending)
    jobs, _ = loaded.rt.exports.list_jobs(
        loaded.rt.keys.resolve(loaded.keys["operator"]),
        limit=1000,  # type: ignore[arg-type]
    )
    gone = loaded.rt.exports.expire(datetime.now(UTC) + timedelta(seconds=1))
    assert set(gone) == {j.id for j in jobs if j.status != "running"}
    assert loaded.rt.exports.pending_files() == []
    assert (
        json.dumps(loaded.rt.exports.list_jobs(loaded.rt.keys.resolve(loaded.keys["operator"]))[0])
        == "[]"
    )  # type: ignore[arg-type]
