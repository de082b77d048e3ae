"""``gristmill sdk --lang ts``: the generated TypeScript client for the platform pack has one
typed method per event type with the schema version pinned, maps JSON Schema to TypeScript
types, and compiles with ``tsc --noEmit --strict`` (the project's pinned TypeScript)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gristmill import codegen, codegen_ts
from gristmill.cli import app
from gristmill.codegen_ts import camel, generate, method_name, pascal, ts_type
from gristmill.pack import load_pack
from gristmill.pack.models import Pack
from tests.conftest import PACKS, ROOT

TSC = ROOT / "node_modules" / ".bin" / "tsc"
PLATFORM = load_pack(PACKS / "platform")
SOURCE = generate(PLATFORM)

CLOSED_PACK = """\
pack: closed
categories:
  c: {retention: 30d}
tables:
  things:
    columns:
      thing_id: {type: string}
event_types:
  thing.done:
    category: c
    table: things
    versions: [1, 2]
    promote: [thing_id]
    entity: {type: thing, id_property: thing_id}
"""
SCHEMA = "https://json-schema.org/draft/2020-12/schema"
CLOSED_V1 = {
    "$schema": SCHEMA,
    "type": "object",
    "required": ["thing_id"],
    "properties": {"thing_id": {"type": "string"}},
}
CLOSED_V2 = {
    "$schema": SCHEMA,
    "type": "object",
    "title": "Thing done",
    "required": ["thing_id", "kind"],
    "additionalProperties": False,
    "properties": {
        "thing_id": {"type": "string"},
        "kind": {"enum": ["a", "b"]},
        "n": {"type": ["integer", "null"]},
    },
}


def closed_pack(tmp: Path) -> Pack:
    """A pack whose newest schema is closed (``additionalProperties: false``), two versions."""
    d = tmp / "closed"
    (d / "schemas" / "thing.done").mkdir(parents=True)
    (d / "pack.yaml").write_text(CLOSED_PACK)
    (d / "schemas" / "thing.done" / "1.json").write_text(json.dumps(CLOSED_V1))
    (d / "schemas" / "thing.done" / "2.json").write_text(json.dumps(CLOSED_V2))
    return load_pack(d)


def test_names() -> None:
    assert method_name("project.created") == "trackProjectCreated"
    assert method_name("order_paid", 1) == "trackOrderPaidV1"
    assert pascal("user.login") == "UserLogin"
    assert pascal("a-b.c_d") == "ABCD"
    assert camel("profile_user_id") == "profileUserId"
    assert camel("default") == "default_"


def test_seed_signature_with_the_entity_id_first() -> None:
    assert (
        "trackProjectCreated(projectId: string, props: ProjectCreatedProps = {}, "
        "options?: TrackOptions): string {" in SOURCE
    )
    # the id is the positional argument, not a property of the props interface
    body = SOURCE[SOURCE.index("export interface ProjectCreatedProps {") :]
    body = body[: body.index("\n}\n")]
    assert "project_id" not in body
    assert "  budget?: number;" in body
    assert "  skills?: string[];" in body
    assert "  is_featured?: boolean;" in body
    assert "  [key: string]: unknown;" in body  # the schema allows extra properties
    # required properties besides the id stay required, so props has no default
    assert (
        "trackProposalSubmitted(proposalId: string, props: ProposalSubmittedProps, "
        "options?: TrackOptions)" in SOURCE
    )
    assert "trackProfileViewed(profileUserId: string, props: ProfileViewedProps = {}" in SOURCE
    assert "trackSearchPerformed(props: SearchPerformedProps, options?: TrackOptions)" in SOURCE


def test_every_event_type_has_a_method_with_its_version_pinned() -> None:
    methods = set(re.findall(r"^  (track[A-Z]\w*)\(", SOURCE, re.M))
    assert len(PLATFORM.spec.event_types) == 32
    for et, spec in PLATFORM.spec.event_types.items():
        newest = max(spec.versions)
        assert method_name(et) in methods
        assert f"this.enqueue({json.dumps(et)}, {newest}, " in SOURCE
        assert f"  {json.dumps(et)}: {newest}," in SOURCE  # SCHEMA_VERSIONS
    assert len(methods) == 32
    assert f'export const PACK_FINGERPRINT = "{PLATFORM.fingerprint}";' in SOURCE
    assert "export class PlatformClient extends GristmillClient {" in SOURCE


def test_older_versions_get_suffixed_methods(tmp_path: Path) -> None:
    src = generate(closed_pack(tmp_path))
    assert 'this.enqueue("thing.done", 2, properties, options)' in src
    assert 'this.enqueue("thing.done", 1, properties, options)' in src
    assert "trackThingDone(thingId: string, props: ThingDoneProps, " in src
    assert "trackThingDoneV1(thingId: string, props: ThingDoneV1Props = {}, " in src
    closed = src[src.index("export interface ThingDoneProps {") :]
    closed = closed[: closed.index("\n}\n")]
    assert '  kind: "a" | "b";' in closed
    assert "  n?: number | null;" in closed
    assert "[key: string]" not in closed  # additionalProperties: false


def test_json_schema_to_typescript() -> None:
    assert ts_type({"type": "integer"}) == "number"
    assert ts_type({"enum": ["card", "ach"]}) == '"card" | "ach"'
    assert ts_type({"const": 3}) == "3"
    assert ts_type({"type": ["string", "null"]}) == "string | null"
    assert ts_type({"type": "array", "items": {"type": "string"}}) == "string[]"
    assert ts_type({"type": "array", "items": {"enum": [1, 2]}}) == "Array<1 | 2>"
    assert ts_type({"type": "array"}) == "unknown[]"
    assert ts_type({}) == "unknown"
    assert ts_type({"anyOf": [{"type": "string"}, {"type": "number"}]}) == "string | number"
    nested = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
    assert ts_type(nested) == "{\n  a: boolean;\n  [key: string]: unknown;\n}"
    closed = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert ts_type({**closed, "additionalProperties": False}) == "{\n  a?: string;\n}"
    assert ts_type({"type": "object", "additionalProperties": {"type": "number"}}) == (
        "{\n  [key: string]: number;\n}"
    )
    assert ts_type({"type": "object", "properties": {"x-y": {}}}).startswith(
        '{\n  "x-y"?: unknown;'
    )


def test_the_runtime_is_inlined_without_third_party_code() -> None:
    runtime = codegen_ts.runtime_source()
    assert runtime.strip() in SOURCE
    assert not re.search(r"^\s*import\s", SOURCE, re.M)
    assert "require(" not in SOURCE
    for piece in ("pagehide", "visibilitychange", "keepalive: true", "Retry-After", "randomUUID"):
        assert piece in runtime


def test_cli_lang_ts_and_python_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRISTMILL_PACKS_DIR", str(PACKS))
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(tmp_path / "data"))
    cli = CliRunner()
    out = tmp_path / "platform.ts"
    r = cli.invoke(app, ["sdk", "--lang", "ts", "--pack", "platform", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text() == SOURCE
    r = cli.invoke(app, ["sdk", "--pack", "platform"])
    assert r.exit_code == 0, r.output
    assert r.output == codegen.generate(PLATFORM)
    assert cli.invoke(app, ["sdk", "--lang", "go", "--pack", "platform"]).exit_code != 0


def need_tsc() -> None:
    if TSC.exists():
        return
    msg = "node_modules/.bin/tsc is missing (run `make node_modules` or `npm ci`)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{msg}; CI=true requires it")
    pytest.skip(msg)


def tsc(cwd: Path, *files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TSC), "--noEmit", "--strict", *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_generated_clients_compile_strict(tmp_path: Path) -> None:
    need_tsc()
    (tmp_path / "platform.ts").write_text(SOURCE)
    (tmp_path / "marketplace.ts").write_text(generate(load_pack(PACKS / "marketplace")))
    (tmp_path / "closed.ts").write_text(generate(closed_pack(tmp_path / "pack")))
    r = tsc(tmp_path, "platform.ts", "marketplace.ts", "closed.ts")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_closed_schema_rejects_an_excess_property(tmp_path: Path) -> None:
    need_tsc()
    (tmp_path / "closed.ts").write_text(generate(closed_pack(tmp_path / "pack")))
    head = 'import { ClosedClient } from "./closed";\n'
    head += 'const gm = new ClosedClient({ writeKey: "k" });\n'
    (tmp_path / "ok.ts").write_text(head + 'gm.trackThingDone("t-1", { kind: "a", n: null });\n')
    (tmp_path / "excess.ts").write_text(head + 'gm.trackThingDone("t-1", { kind: "a", m: 1 });\n')
    (tmp_path / "enum.ts").write_text(head + 'gm.trackThingDone("t-1", { kind: "c" });\n')
    assert tsc(tmp_path, "ok.ts").returncode == 0
    excess = tsc(tmp_path, "excess.ts")
    assert excess.returncode != 0
    assert "'m' does not exist" in excess.stdout, excess.stdout
    enum = tsc(tmp_path, "enum.ts")
    assert enum.returncode != 0
    assert "'\"c\"' is not assignable" in enum.stdout, enum.stdout
