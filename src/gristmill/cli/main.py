"""Entry point: ``gristmill <command>``."""

from __future__ import annotations

import logging

import typer

from gristmill.cli import (
    demo,
    keys,
    load,
    outbox,
    provision,
    quarantine,
    query,
    sdk,
    serve,
    status,
)
from gristmill.cli import exports as exports_cli
from gristmill.cli import feeds as feeds_cli
from gristmill.cli import governance as governance_cli
from gristmill.cli import reprice as reprice_cli
from gristmill.cli import rollups as rollups_cli

app = typer.Typer(
    name="gristmill",
    help="Collect events, validate, quarantine, load exactly once in effect, serve KPIs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("status")(status.status)
app.command("demo")(demo.demo)
app.command("query")(query.query)
app.add_typer(provision.app, name="provision")
app.command("sdk")(sdk.sdk)
app.command("load")(load.load)
app.add_typer(keys.app, name="keys")
app.add_typer(quarantine.app, name="quarantine")
app.add_typer(outbox.app, name="outbox")
app.add_typer(feeds_cli.app, name="feeds")
app.command("erase")(governance_cli.erase)
app.add_typer(governance_cli.erasure_app, name="erasure")
app.add_typer(governance_cli.retention_app, name="retention")
app.command("audit")(governance_cli.audit)
app.command("reprice")(reprice_cli.reprice)
app.add_typer(exports_cli.app, name="exports")
app.add_typer(rollups_cli.app, name="rollups")

from gristmill.cli import consume as _consume  # noqa: E402  (sources; kept apart for merges)
from gristmill.cli import relay as _relay  # noqa: E402
from gristmill.cli import schema as _schema  # noqa: E402  (schema version pins)

app.command("relay")(_relay.relay)
app.command("consume")(_consume.consume)
app.add_typer(_schema.app, name="schema")


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app()
