"""Entry point: ``gristmill <command>``.

Commands are registered as data (:data:`COMMANDS`: name, module, attribute, one-line help) and
imported only when invoked, so ``gristmill --help`` does not import DuckDB, PyArrow, FastAPI
or the runtime (it stays well under 0.3 s; see BENCHMARKS.md). Every error that escapes a
command is turned into one line on stderr and exit code 1 or 2 by :class:`GristmillGroup`;
``--debug`` or ``GRISTMILL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import typer
from typer._click import ClickException, Command, Context, echo  # typer's own click
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One top-level command: a typer function or a typer sub-app in ``module``."""

    name: str
    module: str
    attr: str
    help: str
    group: bool = False


_M = "gristmill.cli."
COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "serve", _M + "serve", "serve", "Serve ingest, the loader and the API until interrupted."
    ),
    CommandSpec(
        "status",
        _M + "status",
        "status",
        "Show conservation per source, log depth and loader state.",
    ),
    CommandSpec(
        "demo",
        _M + "demo",
        "demo",
        "Generate a pack's traffic, send it in, load it, and keep serving.",
    ),
    CommandSpec("query", _M + "query", "query", "Query pack metrics as the operator (unscoped)."),
    CommandSpec(
        "provision",
        _M + "provision",
        "app",
        "Plan and apply the warehouse tables of the packs (docs/provisioning.md).",
        group=True,
    ),
    CommandSpec(
        "sdk",
        _M + "sdk",
        "sdk",
        "Generate a client with one typed method per event type of the pack.",
    ),
    CommandSpec(
        "load",
        _M + "load",
        "load",
        "Load from the log into the warehouse until interrupted (SIGINT or SIGTERM).",
    ),
    CommandSpec(
        "erase",
        _M + "governance",
        "erase",
        "Erase (or anonymize) a subject everywhere: rows, rollups, quarantine, log (GDPR Art. 17).",
    ),
    CommandSpec(
        "audit",
        _M + "governance",
        "audit",
        "The audit log, newest first: erasures, retention runs and other governance actions.",
    ),
    CommandSpec(
        "reprice",
        _M + "reprice",
        "reprice",
        "Price stored rows again from the pack's current price book and recompute rollups.",
    ),
    CommandSpec(
        "relay",
        _M + "relay",
        "relay",
        "Relay outbox rows in commit order until interrupted (SIGINT/SIGTERM stop cleanly).",
    ),
    CommandSpec(
        "consume",
        _M + "consume",
        "consume",
        "Consume until interrupted (SIGINT/SIGTERM finish the batch in hand, then exit).",
    ),
    CommandSpec(
        "keys", _M + "keys", "app", "Create, list and revoke API keys (stored hashed).", group=True
    ),
    CommandSpec(
        "quarantine",
        _M + "quarantine",
        "app",
        "Inspect and replay events that were not loaded.",
        group=True,
    ),
    CommandSpec(
        "outbox",
        _M + "outbox",
        "app",
        "The transactional outbox in your application's database.",
        group=True,
    ),
    CommandSpec(
        "feeds", _M + "feeds", "app", "Import CSV feeds (preview, commit, transform).", group=True
    ),
    CommandSpec(
        "erasure",
        _M + "governance",
        "erasure_app",
        "Erasure requests and their receipts.",
        group=True,
    ),
    CommandSpec(
        "retention", _M + "governance", "retention_app", "Enforce the packs' retention.", group=True
    ),
    CommandSpec(
        "rollups",
        _M + "rollups",
        "app",
        "Check rollups against their rows; rebuild them.",
        group=True,
    ),
    CommandSpec("schema", _M + "schema", "app", "Schema version pins per source.", group=True),
    CommandSpec(
        "exports",
        _M + "exports",
        "app",
        "CSV exports a pack declares (docs/exports.md).",
        group=True,
    ),
)


def load_command(spec: CommandSpec) -> Command:
    """The real click command behind ``spec`` (imports its module)."""
    target = getattr(importlib.import_module(spec.module), spec.attr)
    cmd: Command
    if spec.group:
        cmd = typer.main.get_group(target)
    else:
        holder = typer.Typer(pretty_exceptions_enable=False)
        holder.command(spec.name)(target)
        cmd = typer.main.get_command(holder)
    cmd.name = spec.name
    return cmd


class LazyCommand(TyperCommand):
    """Stands in for a command in listings (name and help only); invoking it builds the real
    one, whose context then runs (so options, help and completion are the real command's)."""

    def __init__(self, spec: CommandSpec) -> None:
        super().__init__(spec.name, help=spec.help, short_help=spec.help)
        self.spec = spec

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Context | None = None,
        **extra: Any,
    ) -> Context:
        return load_command(self.spec).make_context(info_name, args, parent=parent, **extra)


def debug_enabled(ctx: Context | None = None) -> bool:
    root = ctx.find_root() if ctx is not None else None
    if root is not None and root.params.get("debug"):
        return True
    return os.environ.get("GRISTMILL_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


class GristmillGroup(TyperGroup):
    """The top-level group: lazy commands, and one handler turning errors into one line."""

    _specs: ClassVar[dict[str, CommandSpec]] = {s.name: s for s in COMMANDS}

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in self._specs if n not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in self._specs:
            return LazyCommand(self._specs[cmd_name])
        return found

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ClickException, typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # `gristmill ... | head`: the reader left; say nothing more to it.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except KeyboardInterrupt:
            if debug_enabled(ctx):
                raise
            echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            if debug_enabled(ctx):
                raise
            from gristmill.cli.errors import explain

            message, code = explain(exc)
            echo("error: " + " ".join(message.split()), err=True)
            raise typer.Exit(code) from None


app = typer.Typer(
    name="gristmill",
    cls=GristmillGroup,
    help="Collect events, validate, quarantine, load exactly once in effect, serve KPIs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help for the command list: rich's help renderer imports markdown-it and
    # pygments (about 150 modules), which would double the time of `gristmill --help`.
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the full traceback on errors (env GRISTMILL_DEBUG=1)."),
    ] = False,
) -> None:
    """Collect events, validate, quarantine, load exactly once in effect, serve KPIs."""


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Broker clients log every failed connect attempt with a traceback; the command reports
    # the failure itself, in one line.
    for name in ("nats.aio.client", "aiormq.connection", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    app(prog_name="gristmill")
