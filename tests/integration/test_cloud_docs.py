"""The BigQuery/Snowflake provisioning block of docs/warehouses.md runs as written."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.integration.test_readme import run_block


def test_cloud_provisioning_block_runs() -> None:
    out = run_block(ROOT / "docs" / "warehouses.md", "cloud-provision")
    assert "PARTITION BY DATE(`occurred_at`) CLUSTER BY `vendor_store_id`" in out
    assert 'CLUSTER BY ("vendor_store_id", "store_id", "event_type")' in out
    assert "3 table schemas written" in out  # with the default Segment traits table
    assert "{'column': 'occurred_at', 'granularity': 'day', 'native': True} 2555" in out
    assert "set GRISTMILL_WAREHOUSE__PROJECT" in out
    assert "GOOGLE_APPLICATION_CREDENTIALS" in out


def test_redshift_ddl_block_runs() -> None:
    out = run_block(ROOT / "docs" / "warehouses.md", "redshift-ddl")
    assert out.strip() == (
        'DISTKEY("vendor_store_id") COMPOUND SORTKEY("occurred_at", "vendor_store_id", '
        '"store_id", "event_type")'
    )
