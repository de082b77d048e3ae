"""Restating spend after a price-book change (``reprice``): a model that had no price is
priced from its effective date on, a corrected price replaces the old one, rollups follow, and
the answers equal plain Decimal arithmetic over the new book; a dry run changes nothing; the
restatement is audited. Through the API (as the CLI does against a running server)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from tests.conftest import PACKS
from tests.integration.usage_fixtures import END, expected_usage, loaded_runtime

START = END.replace(day=23)
NEW_PRICES = [
    # The model nobody had priced, from the 26th on: calls before stay unpriced.
    {
        "match": {"provider": "acme", "model": "acme-experimental"},
        "effective_from": "2026-11-26",
        "prices": {"input": "0.50", "output": "1.50", "cached": "0.25"},
    },
    # A corrected gpt-4o price from the 28th on.
    {
        "match": {"provider": "openai", "model": "gpt-4o"},
        "effective_from": "2026-11-28",
        "prices": {"input": "2.00", "output": "8.00", "cached": "1.00"},
    },
]


def _packs(tmp: Path) -> Path:
    root = tmp / "packs"
    shutil.copytree(PACKS / "usage_metering", root / "usage_metering")
    return root


def _usage(client: TestClient, token: str, org: str) -> dict[str, Any]:
    r = client.get(
        f"/analytics/v1/orgs/{org}/usage",
        params={"start": START.isoformat(), "end": END.isoformat()},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_reprice_restates_rows_and_rollups(tmp_path: Path) -> None:
    packs = _packs(tmp_path)
    book_file = packs / "usage_metering" / "prices.yaml"
    old_book = yaml.safe_load(book_file.read_text())
    data = tmp_path / "data"
    with loaded_runtime(data, packs_dir=packs) as (rt, traffic):
        events = traffic.distinct
    new_book = dict(old_book, entries=[*old_book["entries"], *NEW_PRICES])
    book_file.write_text(yaml.safe_dump(new_book))
    from gristmill.runtime import Runtime
    from tests.conftest import make_settings

    rt = Runtime(make_settings(data, packs=["usage_metering"], packs_dir=packs))
    try:
        token = rt.meta.create_key("secret", "p", pack="usage_metering", role="platform_admin")[1]
        operator = rt.meta.create_key("secret", "o", role="operator")[1]
        with TestClient(create_app(rt, start=False)) as client:
            before = _usage(client, token, "org_000")
            assert before["totals"]["unpriced_requests"] > 0
            auth = {"Authorization": f"Bearer {operator}"}
            dry = client.post(
                "/v1/reprice/usage_metering", params={"dry_run": "true"}, headers=auth
            )
            assert dry.status_code == 200, dry.text
            assert dry.json()["rows_changed"] > 0
            assert _usage(client, token, "org_000")["totals"] == before["totals"]

            done = client.post("/v1/reprice/usage_metering", headers=auth).json()
            assert done["rows_changed"] == dry.json()["rows_changed"]
            assert done["newly_priced"] > 0
            assert done["newly_unpriced"] == 0
            assert done["buckets_recomputed"]["usage_hourly"] > 0
            for org in ("org_000", "org_002"):
                body = _usage(client, token, org)
                want = expected_usage(events, org, START, END, "day", new_book)
                assert body["totals"]["spend_micros"] == sum(
                    w["spend_micros"] for w in want.values()
                )
                assert body["totals"]["unpriced_requests"] == sum(
                    w["unpriced"] for w in want.values()
                )
                got = {(b["bucket"], b["model"]): b["spend_micros"] for b in body["buckets"]}
                assert got == {k: w["spend_micros"] for k, w in want.items()}
            again = client.post("/v1/reprice/usage_metering", headers=auth).json()
            assert again["rows_changed"] == 0  # idempotent
            user = client.post(
                "/v1/reprice/usage_metering", headers={"Authorization": f"Bearer {token}"}
            )
            assert user.status_code == 403
        entries = rt.governance.store.audit_entries(action="reprice.*", limit=10)
        assert [e.action for e in entries] == ["reprice.run", "reprice.run", "reprice.dry_run"]
        assert entries[1].detail["book"] == rt.packs["usage_metering"].price_book.digest  # type: ignore[union-attr]
    finally:
        rt.stop()
