"""The ``gristmill`` command line (typer + rich)."""

from gristmill.cli.main import app, main

__all__ = ["app", "main"]
