"""Warehouse registry: settings ``type`` -> engine factory, whose driver loads only when used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import cast

from sqlglot import exp

from gristmill.config import Settings
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Capabilities, Warehouse

ENGINES: dict[str, str] = {
    "duckdb": "gristmill.warehouse.duckdb.factory",
    "postgres": "gristmill.warehouse.postgres.factory",
    "bigquery": "gristmill.warehouse.bigquery.factory",
    "snowflake": "gristmill.warehouse.snowflake.factory",
    "clickhouse": "gristmill.warehouse.clickhouse.factory",
    "redshift": "gristmill.warehouse.redshift.factory",
}
"""Engine name -> factory module. A factory module is light: no driver import at top level."""


def _factory(name: str) -> object:
    try:
        return importlib.import_module(ENGINES[name])
    except KeyError:
        raise ValueError(f"unknown warehouse {name!r}; known: {', '.join(ENGINES)}") from None


def capabilities(name: str) -> Capabilities:
    return cast(Capabilities, _factory(name).CAPABILITIES)  # type: ignore[attr-defined]


def render_ddl(
    name: str, packs: Sequence[Pack], settings: Settings, extra: Sequence[exp.Expr] = ()
) -> list[str]:
    """An engine's provisioning DDL for ``packs`` (plus ``extra``), without connecting."""
    render = cast(Callable[..., list[str]], _factory(name).ddl)  # type: ignore[attr-defined]
    return render(packs, settings, extra)


def schema_files(name: str, packs: Sequence[Pack]) -> dict[str, str] | None:
    """An engine's table schemas as files (name -> text), if it documents them that way."""
    render = getattr(_factory(name), "schema_files", None)
    return None if render is None else cast(dict[str, str], render(packs))


def dialect(name: str) -> str:
    return cast(str, _factory(name).DIALECT)  # type: ignore[attr-defined]


def open_warehouse(settings: Settings, *, read_only: bool = False) -> Warehouse:
    create = cast(Callable[..., Warehouse], _factory(settings.warehouse.type).create)  # type: ignore[attr-defined]
    return create(settings, read_only=read_only)
