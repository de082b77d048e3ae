"""Gristmill: collect events, validate them against versioned schemas, quarantine what is bad,
load each event exactly once in effect into a warehouse you own, and serve scoped KPIs."""

__version__ = "0.1.0"

__all__ = ["__version__"]
