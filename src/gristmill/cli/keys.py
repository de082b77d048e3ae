"""``gristmill keys create|list|revoke``: write keys (ingest) and secret keys (role + claims)."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.table import Table

from gristmill.auth.permissions import ROLE_PERMISSIONS
from gristmill.cli.common import DataDirOpt, JsonOpt, console, fail, make_settings
from gristmill.meta.store import MetaStore
from gristmill.pack.loader import load_pack

app = typer.Typer(help="Create, list and revoke API keys (stored hashed).", no_args_is_help=True)


def _store(data_dir: DataDirOpt) -> tuple[MetaStore, object]:
    settings = make_settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return MetaStore(settings.meta_database_url), settings


@app.command("create")
def create(
    pack: Annotated[
        str | None, typer.Option("--pack", "-p", help="Pack a write key sends to.")
    ] = None,
    source: Annotated[
        str, typer.Option(help="Source name a write key's events carry.")
    ] = "default",
    kind: Annotated[str, typer.Option(help="write (ingest) or secret (API access).")] = "write",
    role: Annotated[str | None, typer.Option(help="Role of a secret key.")] = None,
    claim: Annotated[
        list[str] | None, typer.Option(help="Claim of a secret key, name=value; repeatable.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label for people.")] = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Create a key and print its token once (only its hash is stored)."""
    store, settings = _store(data_dir)
    claims: dict[str, str] = {}
    for c in claim or []:
        k, sep, v = c.partition("=")
        if not sep or not k:
            fail(f"--claim {c!r}: use name=value")
        claims[k] = v
    if kind == "write":
        if not pack:
            fail("a write key needs --pack")
        assert pack is not None
        load_pack(settings.resolved_packs_dir / pack)  # type: ignore[attr-defined]
        key, token = store.create_key("write", name or f"{pack}/{source}", pack=pack, source=source)
    elif kind == "secret":
        if not role:
            fail("a secret key needs --role")
        assert role is not None
        if pack:
            spec = load_pack(settings.resolved_packs_dir / pack).spec  # type: ignore[attr-defined]
            if role not in spec.roles:
                fail(f"pack {pack!r} has no role {role!r} (roles: {', '.join(spec.roles)})")
            missing = set(spec.roles[role].claims) - set(claims)
            if missing:
                fail(f"role {role!r} needs claims: {', '.join(sorted(missing))}")
        elif role not in ROLE_PERMISSIONS:
            fail(f"unknown role {role!r}; without --pack use one of {', '.join(ROLE_PERMISSIONS)}")
        key, token = store.create_key("secret", name or role, pack=pack, role=role, claims=claims)
    else:
        fail("--kind is write or secret")
    if json:
        console.print_json(orjson.dumps({"key_id": key.key_id, "token": token}).decode())
    else:
        console.print(f"created {key.kind} key [b]{key.key_id}[/] ({key.name})")
        console.print(f"token (shown once): [b]{token}[/]")


@app.command("list")
def list_(
    data_dir: DataDirOpt = None,
    revoked: Annotated[bool, typer.Option(help="Include revoked keys.")] = False,
    json: JsonOpt = False,
) -> None:
    """List keys (never their tokens)."""
    settings = make_settings(data_dir)
    if settings.meta_url is None and not (settings.data_dir / "meta.sqlite").exists():
        keys = []  # no metadata store yet: no keys (and listing creates none)
    else:
        store, _ = _store(data_dir)
        keys = store.list_keys(include_revoked=revoked)
    if json:
        console.print_json(
            orjson.dumps(
                [
                    {
                        "key_id": k.key_id,
                        "kind": k.kind,
                        "name": k.name,
                        "prefix": k.prefix,
                        "pack": k.pack,
                        "source": k.source,
                        "role": k.role,
                        "claims": k.claims,
                        "created_at": k.created_at.isoformat(),
                        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                    }
                    for k in keys
                ]
            ).decode()
        )
        return
    t = Table()
    for col in ("key_id", "kind", "name", "prefix", "pack", "source", "role", "created", "revoked"):
        t.add_column(col)
    for k in keys:
        t.add_row(
            k.key_id,
            k.kind,
            k.name,
            k.prefix + "…",
            k.pack or "",
            k.source or "",
            k.role or "",
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "",
        )
    console.print(t)


@app.command("revoke")
def revoke(key_id: str, data_dir: DataDirOpt = None) -> None:
    """Revoke a key; running servers stop accepting it within the key cache TTL (5 s)."""
    store, _ = _store(data_dir)
    if not store.revoke_key(key_id):
        fail(f"no active key {key_id!r}")
    console.print(f"revoked {key_id}")
