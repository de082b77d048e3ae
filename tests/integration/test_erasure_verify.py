"""``erasure verify``: rows that still name an erased subject are found from the keyed hashes
alone (the store keeps no identifier) and, with repair, erased again with their rollups.

Two ways rows come back or stay: a table restored from a backup after the erasure (DuckDB),
and an engine that reports a row statement as done without doing it (every engine; what
ClickHouse's rewritten UPDATE did until 2026-12-07). The checks are independent of the code
under test: plain SQL over the table, and the rollup checker's full rebuild as the oracle."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlglot
from fastapi.testclient import TestClient
from sqlglot import exp
from typer.testing import CliRunner

from gristmill.api.app import create_app
from gristmill.cli.main import app as cli
from gristmill.config import ClickHouseSettings, PostgresSettings
from gristmill.core.subjects import Mode
from gristmill.governance.erasure import Subject
from gristmill.rollup import repair
from gristmill.runtime import Runtime
from gristmill.warehouse.common import in_one_transaction
from tests.conftest import make_settings
from tests.integration.governance_fixtures import (
    BASE,
    EMAIL,
    OTHERS,
    SUBJECT,
    rows_of,
    send,
    users_events,
)
from tests.pg import scratch_database

SUBJECT_ROWS = 7  # three logins, three projects, one registration (the one with the email)
EVENTS = "platform_events"


def _runtime(stack: ExitStack, tmp_path: Path, engine: str = "duckdb") -> Runtime:
    overrides: dict[str, Any] = {"server": {"metrics_allow": ["*"]}}
    if engine == "postgres":
        overrides["warehouse"] = PostgresSettings(dsn=stack.enter_context(scratch_database()))
    elif engine == "clickhouse":
        overrides["warehouse"] = ClickHouseSettings()
    rt = Runtime(make_settings(tmp_path / "d", packs=["platform"], **overrides))
    stack.callback(rt.stop)
    return rt


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with ExitStack() as stack:
        yield _runtime(stack, tmp_path)


def _email_rows(rt: Runtime) -> int:
    q = (
        exp.select(exp.func("count", exp.Star()).as_("n"))
        .from_(exp.to_table(f"platform.{EVENTS}"))
        .where(
            exp.Like(
                this=exp.Cast(this=exp.column("properties"), to=exp.DataType.build("TEXT")),
                expression=exp.Literal.string(f"%{EMAIL}%"),
            )
        )
    )
    return int(rt.warehouse.query(q).column("n")[0].as_py())


def _rollups_match_their_rows(rt: Runtime) -> None:
    pack = rt.packs["platform"]
    for name in pack.spec.rollups:
        got = repair.check(rt.warehouse, pack, name)
        assert got.ok, got.as_dict()


def _found(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """mode -> (subjects, rows) over the events table."""
    (table,) = [t for t in report["tables"] if t["table"] == f"platform.{EVENTS}"]
    return {f["mode"]: (f["identifiers"], f["rows"]) for f in table["found"]}


class MissesRowStatements:
    """The runtime's warehouse, except that DELETEs and UPDATEs of the events table are
    reported done and not run (the rollup recompute and the rest still run)."""

    def __init__(self, wh: Any) -> None:
        self._wh = wh

    @staticmethod
    def _row_statement(stmt: exp.Expr) -> bool:
        target = stmt.this if isinstance(stmt, exp.Delete | exp.Update) else None
        return isinstance(target, exp.Table) and target.name == EVENTS

    def execute_all(self, stmts: Any) -> list[int]:
        in_one_transaction(self._wh, [s for s in stmts if not self._row_statement(s[0])])
        return [0 for _ in stmts]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wh, name)


def test_rows_restored_from_a_backup_are_found_and_erased_again(rt: Runtime) -> None:
    send(rt, users_events(BASE))
    others = sum(rows_of(rt, u) for u in OTHERS)

    def erase() -> None:
        rid = rt.governance.request_erasure(Subject((SUBJECT,), (), (EMAIL,)), Mode.DELETE, "t")
        rt.governance.run_pending()
        assert rt.governance.status(rid).status == "completed"  # type: ignore[union-attr]
        clean = rt.governance.verify_erasures().as_dict()
        assert clean["clean"]
        assert clean["rows_found"] == 0
        assert clean["identities_checked"] == 3 + 3  # the others: user ids, registration emails

    _backup_and_restore(rt, erase)
    assert rows_of(rt, SUBJECT) == SUBJECT_ROWS
    found = rt.governance.verify_erasures().as_dict()
    assert not found["clean"]
    assert _found(found) == {"delete": (2, SUBJECT_ROWS)}  # the user id and the email
    assert rows_of(rt, SUBJECT) == SUBJECT_ROWS  # counting changes nothing

    fixed = rt.governance.verify_erasures(repair=True).as_dict()
    assert _found(fixed) == {"delete": (2, SUBJECT_ROWS)}
    assert fixed["rollups"]  # the buckets the restored rows fed were recomputed
    assert rows_of(rt, SUBJECT) == 0
    assert _email_rows(rt) == 0
    assert sum(rows_of(rt, u) for u in OTHERS) == others
    _rollups_match_their_rows(rt)
    assert rt.governance.verify_erasures().as_dict()["clean"]
    actions = [e.action for e in rt.governance.store.audit_entries(action="erasure.*")]
    assert actions[:4] == ["erasure.verify", "erasure.repair", "erasure.verify", "erasure.verify"]


def test_a_pending_request_is_left_to_its_job(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    send(rt, users_events(BASE))
    with monkeypatch.context() as m:  # a settled request whose rows stayed: verify takes it
        m.setattr(rt.governance, "_warehouse", MissesRowStatements(rt.warehouse))
        rt.governance.request_erasure(Subject((OTHERS[0],), (), ()), Mode.DELETE, "t")
        rt.governance.run_pending()
    rt.governance.request_erasure(Subject((SUBJECT,), (), ()), Mode.DELETE, "t")  # not run
    report = rt.governance.verify_erasures(repair=True).as_dict()
    assert _found(report) == {"delete": (1, SUBJECT_ROWS)}  # the settled one only
    assert rows_of(rt, OTHERS[0]) == 0
    assert rows_of(rt, SUBJECT) == SUBJECT_ROWS
    rt.governance.run_pending()
    assert rows_of(rt, SUBJECT) == 0


def _backup_and_restore(rt: Runtime, erase: Callable[[], None]) -> None:
    rt.warehouse.execute(
        sqlglot.parse_one(
            f"CREATE TABLE platform.backup AS SELECT * FROM platform.{EVENTS} "
            f"WHERE user_id = '{SUBJECT}'",
            dialect="duckdb",
        )
    )
    erase()
    rt.warehouse.execute(
        sqlglot.parse_one(
            f"INSERT INTO platform.{EVENTS} SELECT * FROM platform.backup", dialect="duckdb"
        )
    )


def test_a_row_naming_a_deleted_and_an_anonymized_subject_is_deleted(rt: Runtime) -> None:
    """The email was erased with delete, the user id with anonymize: after a restore, the
    registration row names both and is counted once, under delete, and deleted; the rest
    are anonymized (the collector drops an event naming both, delete beating anonymize)."""
    send(rt, users_events(BASE))

    def erase() -> None:
        rt.governance.request_erasure(Subject((), (), (EMAIL,)), Mode.DELETE, "t")
        rt.governance.request_erasure(Subject((SUBJECT,), (), ()), Mode.ANONYMIZE, "t")
        rt.governance.run_pending()

    _backup_and_restore(rt, erase)
    found = rt.governance.verify_erasures().as_dict()
    assert _found(found) == {"delete": (1, 1), "anonymize": (1, SUBJECT_ROWS - 1)}
    assert found["rows_found"] == SUBJECT_ROWS  # each row once
    fixed = rt.governance.verify_erasures(repair=True).as_dict()
    assert fixed["rows_found"] == SUBJECT_ROWS
    assert _email_rows(rt) == 0  # the registration row is gone, not anonymized
    assert rows_of(rt, SUBJECT) == 0
    registrations = rt.warehouse.query_sql(
        f"SELECT count(*) AS n FROM platform.{EVENTS} WHERE event_type = 'user.registered'"
    )
    assert int(registrations.column("n")[0].as_py()) == len(OTHERS)
    _rollups_match_their_rows(rt)
    assert rt.governance.verify_erasures().as_dict()["clean"]


def _insert_raw_properties(rt: Runtime, event_id: str, properties: str) -> None:
    """A row written by a tool that bypassed the collector, its JSON spelled its own way."""
    rt.warehouse.execute(
        sqlglot.parse_one(
            f"INSERT INTO platform.{EVENTS} (event_id, event_type, schema_version, occurred_at,"
            " received_at, loaded_at, source, properties, event_category) VALUES"
            f" ('{event_id}', 'user.registered', 1, TIMESTAMP '2026-11-20 10:00:00+00',"
            " now(), now(), 'tool', $props, 'auth')",
            dialect="duckdb",
        ),
        {"props": properties},
    )


@pytest.mark.parametrize("in_sql", [True, False], ids=["extracted-in-sql", "text-decoded"])
def test_a_value_escaped_by_another_writer_is_found_and_erased(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, in_sql: bool
) -> None:
    """Both ways of reading subject properties: in SQL (DuckDB, PostgreSQL, ClickHouse) and
    the portable text scan the other engines use."""
    if not in_sql:
        monkeypatch.setattr("gristmill.governance.verify.json_text", lambda *a: None)
    person = "jörg/ü@example.org"
    rt.governance.request_erasure(Subject((), (), (person,)), Mode.DELETE, "t")
    rt.governance.run_pending()
    escaped = json.dumps({"email": person}).replace("/", "\\/")  # \u00f6 and \/, as PHP
    assert "\\u00f6" in escaped
    _insert_raw_properties(rt, "tool-1", escaped)
    found = rt.governance.verify_erasures().as_dict()
    assert _found(found) == {"delete": (1, 1)}
    assert found["unlocated"] == 0
    rt.governance.verify_erasures(repair=True)
    assert rt.governance.verify_erasures().as_dict()["clean"]
    left = rt.warehouse.query_sql(f"SELECT count(*) AS n FROM platform.{EVENTS}")
    assert int(left.column("n")[0].as_py()) == 0


@pytest.mark.parametrize("in_sql", [True, False], ids=["extracted-in-sql", "text-decoded"])
def test_a_number_where_a_subject_property_was_expected_names_nobody(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, in_sql: bool
) -> None:
    """The collector and erasure match subject properties as strings only; verify agrees,
    on either path, so a number equal to an erased id keeps the report clean."""
    if not in_sql:
        monkeypatch.setattr("gristmill.governance.verify.json_text", lambda *a: None)
    rt.governance.request_erasure(Subject(("4711",), (), ()), Mode.DELETE, "t")
    rt.governance.run_pending()
    _insert_raw_properties(rt, "tool-3", '{"email": 4711}')
    report = rt.governance.verify_erasures().as_dict()
    assert report["clean"], report


def test_an_identifier_whose_rows_cannot_be_located_keeps_the_report_unclean(
    rt: Runtime,
) -> None:
    """Upper-case hex escapes are valid JSON that no search pattern covers: the identity is
    found by hashing, its row is not, and the report says so instead of "clean"."""
    person = "jörg@example.org"
    rt.governance.request_erasure(Subject((), (), (person,)), Mode.DELETE, "t")
    rt.governance.run_pending()
    _insert_raw_properties(rt, "tool-2", '{"email": "j\\u00F6rg@example.org"}')
    report = rt.governance.verify_erasures(repair=True).as_dict()
    assert report["unlocated"] == 1
    assert report["clean"] is False
    assert report["rows_found"] == 0


@pytest.mark.parametrize(
    "engine",
    [
        "duckdb",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("clickhouse", marks=pytest.mark.clickhouse),
    ],
)
@pytest.mark.parametrize("mode", [Mode.DELETE, Mode.ANONYMIZE])
def test_rows_an_engine_missed_are_repaired_on_every_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str, mode: Mode
) -> None:
    with ExitStack() as stack:
        rt = _runtime(stack, tmp_path, engine)
        send(rt, users_events(BASE))
        others = sum(rows_of(rt, u) for u in OTHERS)
        with monkeypatch.context() as m:
            m.setattr(rt.governance, "_warehouse", MissesRowStatements(rt.warehouse))
            rid = rt.governance.request_erasure(Subject((SUBJECT,), (), (EMAIL,)), mode, "t")
            rt.governance.run_pending()
        record = rt.governance.status(rid)
        assert record is not None
        assert record.status == "failed"
        assert "still name the subject" in str(record.error)
        assert rows_of(rt, SUBJECT) == SUBJECT_ROWS

        found = rt.governance.verify_erasures().as_dict()
        assert _found(found) == {mode.value: (2, SUBJECT_ROWS)}
        fixed = rt.governance.verify_erasures(repair=True).as_dict()
        assert _found(fixed) == {mode.value: (2, SUBJECT_ROWS)}
        assert rows_of(rt, SUBJECT) == 0
        assert _email_rows(rt) == 0
        assert sum(rows_of(rt, u) for u in OTHERS) == others
        _rollups_match_their_rows(rt)
        assert rt.governance.verify_erasures().as_dict()["clean"]


def test_the_endpoint_needs_erasure_write_and_the_cli_exits_1_on_findings(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(rt, users_events(BASE))
    with monkeypatch.context() as m:
        m.setattr(rt.governance, "_warehouse", MissesRowStatements(rt.warehouse))
        rt.governance.request_erasure(Subject((SUBJECT,), (), ()), Mode.DELETE, "t")
        rt.governance.run_pending()
    admin = rt.meta.create_key("secret", "adm", pack="platform", role="admin")[1]
    operator = rt.meta.create_key("secret", "op", role="operator")[1]
    with TestClient(create_app(rt, start=False)) as client:
        r = client.post("/v1/erasure/verify", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
        r = client.post(
            "/v1/erasure/verify?pack=nope", headers={"Authorization": f"Bearer {operator}"}
        )
        assert r.status_code == 403, r.text
        r = client.post(
            "/v1/erasure/verify?pack=platform", headers={"Authorization": f"Bearer {operator}"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["rows_found"] == SUBJECT_ROWS
        assert r.json()["repair"] is False
    assert rows_of(rt, SUBJECT) == SUBJECT_ROWS
    rt.stop()  # the CLI opens the files itself

    args = ["erasure", "verify", "--data-dir", str(rt.settings.data_dir), "--pack", "platform"]
    runner = CliRunner()
    res = runner.invoke(cli, [*args, "--json"])
    assert res.exit_code == 1, res.output
    assert orjson.loads(res.stdout)["rows_found"] == SUBJECT_ROWS
    res = runner.invoke(cli, [*args, "--repair"])
    assert res.exit_code == 0, res.output
    assert f"erased again: {SUBJECT_ROWS}" in res.output
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "found: 0" in res.output


def test_a_list_where_a_subject_property_was_expected_does_not_fail_the_request(
    rt: Runtime,
) -> None:
    """A row whose subject property holds a list that contains the erased value as text:
    the search finds it, and deciding whether it names the subject must not raise."""
    _insert_raw_properties(rt, "tool-4", json.dumps({"email": [EMAIL]}))
    rid = rt.governance.request_erasure(Subject((), (), (EMAIL,)), Mode.DELETE, "t")
    rt.governance.run_pending()
    record = rt.governance.status(rid)
    assert record is not None
    assert record.status == "completed", record.error
    assert rt.governance.verify_erasures().as_dict()["clean"]
