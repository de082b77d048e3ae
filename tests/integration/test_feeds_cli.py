"""``gristmill feeds import``: offline (opens the data directory) and through a running server."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from gristmill.cli import app
from gristmill.demo.process import ServerProcess, free_port
from tests.conftest import PACKS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("GRISTMILL_PACKS_DIR", str(PACKS))
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GRISTMILL_PACKS", '["sales_feeds"]')
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def _import(cli: CliRunner, name: str, *extra: str) -> tuple[int, str]:
    """Exit code and stdout (with ``--json``) or everything printed (progress is on stderr)."""
    args = ["feeds", "import", str(FIXTURES / name), "--pack", "sales_feeds", "--business", "7"]
    r = cli.invoke(app, [*args, *extra])
    return r.exit_code, r.stdout if "--json" in extra else r.output


def test_import_offline(cli: CliRunner) -> None:
    code, out = _import(cli, "21_discount_channel_order.csv", "--json")
    assert code == 0, out
    body = orjson.loads(out)
    assert (body["status"], body["rows_in"], body["record_count"]) == ("transformed", 3, 3)
    assert body["summary"]["metrics"]["gross_revenue_cents"] == 1250
    assert sorted(body["created_products"]) == ["Latte", "Tea"]
    code, out = _import(cli, "13_bad_numbers.csv")
    assert code == 1
    assert "line 2: quantity: not a number: 'one'" in out
    code, out = _import(cli, "13_bad_numbers.csv", "--allow-invalid")
    assert code == 0, out
    assert "rows in 8 = accepted 1 + rejected 7" in out
    code, out = _import(cli, "08_missing_column.csv")
    assert code == 1
    assert "missing required columns: price" in out


def test_import_through_running_server(cli: CliRunner, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", free_port(), packs_dir=PACKS)
    server.start()
    try:
        code, out = _import(cli, "06_quoted.csv", "--json")
        assert code == 0, out
        body = orjson.loads(out)
        assert body["status"] == "transformed"
        assert body["summary"]["metrics"]["gross_revenue_cents"] == 126250
    finally:
        server.stop()


HONEST = FIXTURES / "honest"


def _import_file(cli: CliRunner, path: Path, *extra: str) -> tuple[int, str]:
    args = ["feeds", "import", str(path), "--pack", "sales_feeds", "--business", "7", *extra]
    r = cli.invoke(app, args)
    return r.exit_code, r.stdout if "--json" in extra else r.output


def test_import_summary_rows_and_merges(cli: CliRunner) -> None:
    code, out = _import_file(cli, HONEST / "summary_sum_amount.csv", "--json")
    assert code == 0, out
    body = orjson.loads(out)
    # 2 x 3.50 + 4.00 + 3 x 3.50 + 4 x 2.00; the trailing sums row is not a sale.
    assert (body["record_count"], body["summary_rows"]) == (4, 1)
    assert body["summary"]["metrics"]["gross_revenue_cents"] == 700 + 400 + 1050 + 800
    # Latte now exists; "Lattee" is merged only when asked.
    code, out = _import_file(cli, HONEST / "near_duplicates.csv", "--allow-invalid", "--json")
    assert code == 0, out
    assert sorted(orjson.loads(out)["created_products"]) == ["Cold Brew", "Cold Brews", "Lattee"]


def test_import_merge_flag(cli: CliRunner) -> None:
    code, out = _import_file(cli, HONEST / "summary_words.csv", "--json")  # creates Latte
    assert code == 0, out
    code, out = _import_file(
        cli, HONEST / "near_duplicates.csv", "--allow-invalid", "--merge", "Lattee", "--json"
    )
    assert code == 0, out
    body = orjson.loads(out)
    assert list(body["merged_products"]) == ["Lattee"]
    assert "Lattee" not in body["created_products"]


def test_import_date_order_flag(cli: CliRunner) -> None:
    code, out = _import_file(cli, HONEST / "ambiguous_dates.csv")
    assert code == 1
    assert "read both ways" in out
    code, out = _import_file(cli, HONEST / "ambiguous_dates.csv", "--date-order", "month_first")
    assert code == 0, out
    assert "rows in 3 = accepted 3 + rejected 0" in out


def test_import_binary_file(cli: CliRunner, tmp_path: Path) -> None:
    junk = tmp_path / "photo.csv"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    code, out = _import_file(cli, junk)
    assert code == 1
    assert "not a text file: a PNG image" in out
