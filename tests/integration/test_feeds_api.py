"""Preview -> commit -> transform over HTTP: tokens, tenants, idempotency, failure, money."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gristmill.feeds.store import feeds as feed_table
from gristmill.feeds.store import uploads
from gristmill.sql import ddl
from tests.integration.feeds_fixtures import FIXTURES, Feeds, feeds_fixture  # noqa: F401

SALES = (
    b"transaction_date,product_name,quantity,price,discount,order_id\n"
    b"2025-01-05,Latte,2,3.50,0.50,o-1\n"
    b"2025-01-05,Cold Brew,1,4.25,,o-1\n"
    b"2025-01-06,latte ,3,3.50,,o-2\n"
    b"2025-01-06,Lattee,1,3.50,,\n"
)


def fact_rows(f: Feeds, feed_id: int) -> list[dict[str, object]]:
    t = ddl.table_ref("sales_feeds", "fact_sales")
    sql = f"SELECT * FROM {t.sql('duckdb')} WHERE data_feed_id = $f ORDER BY event_id"
    return f.rt.warehouse.query_sql(sql, {"f": feed_id}).to_pylist()


def staged(f: Feeds, feed_id: int) -> int:
    t = ddl.table_ref("sales_feeds", "staging_sales_items")
    sql = f"SELECT count(*) AS n FROM {t.sql('duckdb')} WHERE data_feed_id = $f"
    return int(f.rt.warehouse.query_sql(sql, {"f": feed_id}).to_pylist()[0]["n"])


def test_preview_shapes_rows_and_matches(feeds: Feeds) -> None:
    made = feeds.products("b1", ["Latte"], cost_price="1.20").json()["products"]
    r = feeds.preview("b1", "s.csv", SALES)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"]
    assert body["upload_token"]
    assert body["headers"][:4] == ["transaction_date", "product_name", "quantity", "price"]
    rows = body["rows"]
    assert rows[0]["original"]["price"] == "3.50"
    assert rows[0]["normalized"] == {
        "transaction_date": "2025-01-05",
        "product_name": "Latte",
        "quantity": 2,
        "price": 3.5,
        "discount": 0.5,
        "order_id": "o-1",
        "channel": None,
    }
    assert rows[0]["product_match"] == {
        "status": "exact",
        "product_id": made["Latte"],
        "product_name": "Latte",
    }
    assert rows[1]["product_match"] == {"status": "none"}
    assert rows[2]["product_match"]["status"] == "exact"  # case and spaces ignored
    assert rows[3]["product_match"]["status"] == "fuzzy"
    assert rows[3]["product_match"]["score"] >= 70
    assert body["summary"] == {
        "total_rows": 4,
        "valid_rows": 4,
        "invalid_rows": 0,
        "summary_rows": 0,
        "new_product_candidates": ["Cold Brew"],
        "merges": [
            {
                "name": "Lattee",
                "product_id": made["Latte"],
                "product_name": "Latte",
                "score": rows[3]["product_match"]["score"],
                "rule": f"rapidfuzz ratio {rows[3]['product_match']['score']:.1f} >= threshold 70",
                "lines": [5],
            }
        ],
        "needs_choice": [],
        "more_rows": False,
    }


def test_commit_transform_money_exact(feeds: Feeds) -> None:
    feeds.products("b1", ["Latte"], cost_price="1.20")
    token = feeds.preview("b1", "s.csv", SALES).json()["upload_token"]
    r = feeds.commit(
        "b1", token, auto_create_products=True, business_id=1, confirm_merges=["Lattee"]
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["record_count"], body["status"], body["rejected"]) == (4, "queued", 0)
    assert list(body["created_products"]) == ["Cold Brew"]
    assert list(body["merged_products"]) == ["Lattee"]
    done = feeds.wait("b1", body["feed_id"])
    assert done["status"] == "transformed", done
    s = done["summary"]
    assert (s["stage"], s["error"]) == ("transformed", None)
    assert {"queued_at", "transform_started_at", "transform_finished_at"} <= set(s)
    # revenue: 2*3.50 + 1*4.25 + 3*3.50 + 1*3.50 = 25.25; COGS: Latte 1.20 x 6 = 7.20,
    # Cold Brew has no cost (0, warned); margin = 25.25 - 7.20 - 0.50 discount = 17.55
    assert s["metrics"] == {
        "records": 4,
        "gross_revenue": 25.25,
        "gross_revenue_cents": 2525,
        "cogs_amount": 7.2,
        "cogs_amount_cents": 720,
        "gross_margin_amount": 17.55,
        "gross_margin_amount_cents": 1755,
        "gross_margin_percent": 69.5,
    }
    assert s["issues"] == [
        {
            "type": "info",
            "code": "merged_products",
            "message": "1 names merged into existing products as confirmed.",
            "count": 1,
            "merged": {"Lattee": body["merged_products"]["Lattee"]},
        },
        {
            "type": "warning",
            "code": "missing_product_cost",
            "message": "1 products had no cost price; COGS assumed 0.",
            "count": 1,
        },
    ]
    rows = fact_rows(feeds, body["feed_id"])
    assert [r["gross_revenue_cents"] for r in rows] == [700, 425, 1050, 350]
    assert [r["gross_margin_amount_cents"] for r in rows] == [410, 425, 690, 230]
    assert rows[0]["gross_margin_percent"] == 58.57
    assert rows[3]["order_id"] == rows[3]["event_id"]  # a line without order is its own order
    assert {r["business_id"] for r in rows} == {"1"}
    assert staged(feeds, body["feed_id"]) == 0  # purged on success
    hist = feeds.client.get("/dashboard/data-feeds", headers=feeds.h("b1")).json()["feeds"]
    assert [h["id"] for h in hist] == [body["feed_id"]]
    assert hist[0]["summary"] == s
    assert feeds.client.get("/dashboard/data-feeds", headers=feeds.h("b2")).json()["feeds"] == []


def test_recommit_and_retransform_are_idempotent(feeds: Feeds) -> None:
    token = feeds.preview("b1", "s.csv", SALES).json()["upload_token"]
    first = feeds.commit("b1", token, auto_create_products=True).json()
    assert feeds.wait("b1", first["feed_id"])["status"] == "transformed"
    again = feeds.commit("b1", token, auto_create_products=True)
    assert again.status_code == 202
    assert again.json()["feed_id"] == first["feed_id"]
    assert len(fact_rows(feeds, first["feed_id"])) == 4
    # The load itself twice over the same staged rows: still one copy.
    token2 = feeds.preview("b1", "s.csv", SALES).json()["upload_token"]
    up = feeds.rt.feeds.upload_for(token2, "1")
    res = feeds.rt.feeds.commit(up, auto_create_products=True, queue=False)
    tables = feeds.rt.feeds.tables(feeds.rt.feeds.feed("sales_feeds", "sales"))
    feeds.rt.feeds.transformer.load(tables, res.feed_id)
    feeds.rt.feeds.transformer.load(tables, res.feed_id)
    assert len(fact_rows(feeds, res.feed_id)) == 4
    assert feeds.rt.feeds.transformer.run(res.feed_id) == "transformed"
    assert feeds.rt.feeds.transformer.run(res.feed_id) == "transformed"
    assert len(fact_rows(feeds, res.feed_id)) == 4


def test_failure_before_load_keeps_staging_then_retry(feeds: Feeds) -> None:
    token = feeds.preview("b1", "s.csv", SALES).json()["upload_token"]
    up = feeds.rt.feeds.upload_for(token, "1")
    res = feeds.rt.feeds.commit(up, auto_create_products=True, queue=False)
    fact = ddl.table_ref("sales_feeds", "fact_sales").sql("duckdb")
    feeds.rt.warehouse.query_sql(f"ALTER TABLE {fact} RENAME TO fact_sales_away")
    assert feeds.rt.feeds.transformer.run(res.feed_id) == "failed"
    body = feeds.status("b1", res.feed_id).json()
    assert body["status"] == "failed"
    err = body["summary"]["error"]
    assert (err["code"], len(err["trace_id"])) == ("transform_failed", 32)
    assert staged(feeds, res.feed_id) == 4  # kept for inspection
    feeds.rt.warehouse.query_sql("ALTER TABLE sales_feeds.fact_sales_away RENAME TO fact_sales")
    r = feeds.client.post(f"/dashboard/data-feeds/{res.feed_id}/transform", headers=feeds.h("b1"))
    assert r.status_code == 202
    assert feeds.wait("b1", res.feed_id)["status"] == "transformed"
    assert len(fact_rows(feeds, res.feed_id)) == 4
    assert staged(feeds, res.feed_id) == 0


def test_tokens_expired_missing_and_other_business(feeds: Feeds) -> None:
    token = feeds.preview("b1", "s.csv", SALES).json()["upload_token"]
    assert feeds.commit("b2", token).status_code == 404
    assert feeds.commit("b1", token, business_id=2).status_code == 404
    assert feeds.commit("b1", "no-such-token").status_code == 410
    with feeds.rt.meta.engine.begin() as c:
        c.execute(
            uploads.update()
            .where(uploads.c.token == token)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    r = feeds.commit("b1", token, auto_create_products=True)
    assert r.status_code == 410, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert feeds.commit("b1", token).status_code == 410  # and the file is gone


def test_invalid_rows_422_unless_allowed(feeds: Feeds) -> None:
    content = (FIXTURES / "13_bad_numbers.csv").read_bytes()
    token = feeds.preview("b1", "bad.csv", content).json()["upload_token"]
    r = feeds.commit("b1", token, auto_create_products=True)
    assert r.status_code == 422
    body = r.json()
    assert [e["line"] for e in body["errors"]] == [2, 3, 4, 5, 6, 7, 9]
    assert body["errors"][0]["errors"] == ["quantity: not a number: 'one'"]
    token = feeds.preview("b1", "bad.csv", content).json()["upload_token"]
    r = feeds.commit("b1", token, auto_create_products=True, allow_invalid=True)
    assert r.status_code == 202
    out = r.json()
    assert (out["rows_in"], out["record_count"], out["rejected"]) == (8, 1, 7)
    assert feeds.wait("b1", out["feed_id"])["summary"]["metrics"]["gross_revenue_cents"] == 200020
    rej = feeds.client.get(f"/dashboard/data-feeds/{out['feed_id']}/rejects", headers=feeds.h("b1"))
    assert rej.json()["rejects"][0] == {
        "line": 2,
        "reasons": ["quantity: not a number: 'one'"],
        "fields": ["2025-01-01", "A", "one", "1.00"],
    }


def test_unknown_products_rejected_without_auto_create(feeds: Feeds) -> None:
    token = feeds.preview("b1", "s.csv", SALES).json()["upload_token"]
    r = feeds.commit("b1", token)
    assert r.status_code == 422
    assert "unknown product 'Latte'" in r.json()["errors"][0]["errors"][0]


def test_refusals(feeds: Feeds) -> None:
    r = feeds.preview("b1", "m.csv", (FIXTURES / "08_missing_column.csv").read_bytes())
    assert r.status_code == 422
    assert r.json()["missing"] == ["price"]
    assert "price" in r.json()["detail"]
    r = feeds.preview("b1", "e.csv", b"")
    assert r.status_code == 422
    assert "empty" in r.json()["detail"]
    big = b"x" * (feeds.rt.settings.feeds.max_upload_bytes + 1)
    assert feeds.preview("b1", "big.csv", big).status_code == 413
    assert feeds.preview("b1", "s.csv", SALES, business_id="2").status_code == 404
    assert feeds.preview("ops", "s.csv", SALES).status_code == 422  # operator names the tenant
    assert feeds.preview("ops", "s.csv", SALES, business_id="2").status_code == 200
    assert (
        feeds.client.post("/dashboard/data-feeds/preview", files={"file": ("a", b"")}).status_code
        == 401
    )


def test_other_business_feed_is_404(feeds: Feeds) -> None:
    token = feeds.preview("b1", "s.csv", SALES).json()["upload_token"]
    fid = feeds.commit("b1", token, auto_create_products=True).json()["feed_id"]
    assert feeds.status("b2", fid).status_code == 404
    assert feeds.status("ops", fid).status_code == 200
    feeds.wait("b1", fid)


def test_costs_feed_updates_products(feeds: Feeds) -> None:
    feeds.products("b1", ["Latte", "Mocha"])
    costs = b"Product;Cost\r\nlatte;1,20\r\nMocha;1,55\r\nUnknown;9,99\r\n"
    r = feeds.client.post(
        "/dashboard/data-feeds/preview",
        headers=feeds.h("b1"),
        files={"file": ("costs.csv", costs, "text/csv")},
        data={"data_type": "costs"},
    )
    assert r.status_code == 200, r.text
    assert [row["product_match"]["status"] for row in r.json()["rows"]] == [
        "exact",
        "exact",
        "none",
    ]
    c = feeds.client.post(
        "/dashboard/data-feeds/commit",
        headers=feeds.h("b1"),
        json={
            "upload_token": r.json()["upload_token"],
            "data_type": "costs",
            "allow_invalid": True,
        },
    )
    assert c.status_code == 202, c.text
    assert (c.json()["record_count"], c.json()["rejected"]) == (2, 1)
    done = feeds.wait("b1", c.json()["feed_id"])
    assert done["summary"]["metrics"] == {"records": 2, "products_updated": 2}
    cost = {p.name: p.cost_price_cents for p in feeds.rt.feeds.store.products("1")}
    assert cost == {"Latte": 120, "Mocha": 155}
    # A sales feed after it uses the new cost.
    token = feeds.preview(
        "b1", "s.csv", b"transaction_date,product_name,quantity,price\n2025-01-01,Mocha,2,4.00\n"
    ).json()["upload_token"]
    fid = feeds.commit("b1", token).json()["feed_id"]
    assert feeds.wait("b1", fid)["summary"]["metrics"]["cogs_amount_cents"] == 310


def test_stale_transforming_feed_can_be_retried(feeds: Feeds) -> None:
    token = feeds.preview("b1", "s.csv", SALES).json()["upload_token"]
    up = feeds.rt.feeds.upload_for(token, "1")
    res = feeds.rt.feeds.commit(up, auto_create_products=True, queue=False)
    feeds.rt.feeds.store.update_feed(res.feed_id, status="transforming")  # a run that died
    url = f"/dashboard/data-feeds/{res.feed_id}/transform"
    assert feeds.client.post(url, headers=feeds.h("b1")).status_code == 409
    with feeds.rt.meta.engine.begin() as c:
        c.execute(
            feed_table.update()
            .where(feed_table.c.id == res.feed_id)
            .values(updated_at=datetime.now(UTC) - timedelta(hours=1))
        )
    assert feeds.client.post(url, headers=feeds.h("b1")).status_code == 202
    assert feeds.wait("b1", res.feed_id)["status"] == "transformed"
    assert len(fact_rows(feeds, res.feed_id)) == 4
