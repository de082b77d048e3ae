"""``gristmill outbox ddl``: the outbox table for your application database."""

from __future__ import annotations

from typing import Annotated

import typer

from gristmill.cli.common import fail
from gristmill.outbox import DEFAULT_TABLE
from gristmill.outbox import ddl as outbox_ddl

app = typer.Typer(
    help="The transactional outbox in your application's database.", no_args_is_help=True
)


@app.command("ddl")
def ddl(
    dialect: Annotated[str, typer.Option(help="postgres, sqlite or mysql.")] = "postgres",
    table: Annotated[str, typer.Option(help="Table name.")] = DEFAULT_TABLE,
) -> None:
    """Print the CREATE TABLE for the outbox that ``gristmill.outbox.emit`` writes to."""
    try:
        sql = outbox_ddl(dialect, table)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(sql)  # as is: console wrapping would break SQL (a comment split in two)
