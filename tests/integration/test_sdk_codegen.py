"""``gristmill sdk``: the generated module type-checks, catches wrong calls under mypy, and its
methods land events with the schema version pinned."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from sqlglot import exp
from typer.testing import CliRunner

from gristmill.cli.main import app
from gristmill.client import Client
from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref
from tests.conftest import PACKS
from tests.live import live, wait_loaded

GOOD = """
from marketplace_sdk import MarketplaceEvents
from gristmill.client import Client

def send(gm: MarketplaceEvents) -> str:
    gm.order_paid(order_id="o", store_id="s", vendor_store_id="v", amount_cents=1,
                  payment_method="card")
    return gm.order_created_v1(order_id="o", store_id="s", vendor_store_id="v", amount_cents=2)
"""
BAD = """
from marketplace_sdk import MarketplaceEvents

def send(gm: MarketplaceEvents) -> None:
    gm.order_paid(order_id="o", store_id="s", vendor_store_id="v", amount_cents="12.50")
    gm.order_paid(order_id="o", store_id="s", vendor_store_id="v", amount_cents=1,
                  payment_method="bitcoin")
    gm.ad_click(ad_id="a")
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sdk")
    result = CliRunner().invoke(
        app,
        ["sdk", "--pack", "marketplace", "--out", str(folder / "marketplace_sdk.py")],
        env={"GRISTMILL_PACKS_DIR": str(PACKS)},
    )
    assert result.exit_code == 0, result.output
    return folder


def mypy(folder: Path, source: str) -> subprocess.CompletedProcess[str]:
    (folder / "usage.py").write_text(source)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(folder / ".mypy_cache"),
            "marketplace_sdk.py",
            "usage.py",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )


def test_generated_module_type_checks(generated: Path) -> None:
    done = mypy(generated, GOOD)
    assert done.returncode == 0, done.stdout


def test_wrong_calls_are_caught_before_sending(generated: Path) -> None:
    done = mypy(generated, BAD)
    assert done.returncode == 1
    out = done.stdout
    assert 'Argument "amount_cents" to "order_paid"' in out
    assert 'Argument "payment_method" to "order_paid"' in out
    assert 'Missing named argument "campaign_id" for "ad_click"' in out


def _load(folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("marketplace_sdk", folder / "marketplace_sdk.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_methods_land_events_with_their_version(generated: Path, runtime: Runtime) -> None:
    key = runtime.meta.create_key("write", "sdk", pack="marketplace", source="sdk")[1]
    sdk = _load(generated)
    with live(runtime) as (url, _):
        client = Client(key, host=url)
        gm = sdk.MarketplaceEvents(client)
        a = gm.order_created(
            order_id="o-1", store_id="s", vendor_store_id="v", amount_cents=5, currency="EUR"
        )
        b = gm.order_created_v1(order_id="o-2", store_id="s", vendor_store_id="v", amount_cents=6)
        assert client.flush(timeout=10)
        client.shutdown()
        wait_loaded(runtime, 2)
        rows = runtime.warehouse.query(
            exp.select("event_id", "schema_version", "amount_cents")
            .from_(table_ref("marketplace", "marketplace_events"))
            .order_by("amount_cents")
        ).to_pylist()
    assert rows == [
        {"event_id": a, "schema_version": 2, "amount_cents": 5},
        {"event_id": b, "schema_version": 1, "amount_cents": 6},
    ]
