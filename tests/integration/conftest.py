"""Fixtures shared by the analytics tests (a loaded marketplace warehouse per module)."""

from tests.integration.analytics_fixtures import loaded

__all__ = ["loaded"]
