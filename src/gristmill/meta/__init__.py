"""Layer 2: the metadata store (keys now; feeds, jobs, audit later). SQLite or PostgreSQL."""

from gristmill.meta.store import ApiKey, MetaStore

__all__ = ["ApiKey", "MetaStore"]
