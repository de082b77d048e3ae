"""Layer 4: the HTTP API (FastAPI), one router per domain."""

from gristmill.api.app import create_app

__all__ = ["create_app"]
