"""The fixed list of permissions. Roles (built in, or declared by packs) map to sets of these;
handlers declare which one they need."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    INGEST = "ingest"
    PIPELINE_READ = "pipeline:read"
    QUARANTINE_READ = "quarantine:read"
    QUARANTINE_REPLAY = "quarantine:replay"
    METRICS_READ = "metrics:read"
    EVENTS_READ = "events:read"
    FRESHNESS_READ = "freshness:read"
    ERASURE_WRITE = "erasure:write"
    """Request that a subject be erased or anonymized (every pack)."""
    ERASURE_READ = "erasure:read"
    RETENTION_RUN = "retention:run"
    REPRICE_RUN = "reprice:run"
    """Restate stored spend from a pack's current price book."""
    ROLLUPS_REPAIR = "rollups:repair"
    """Check rollups against their rows and rebuild them."""
    AUDIT_READ = "audit:read"
    EXPORTS_CREATE = "exports:create"
    """Ask for a CSV export a pack declares (rows streamed or a job)."""
    EXPORTS_READ = "exports:read"
    """See export jobs of one's own scope and get their signed download URLs."""
    DEBUG = "debug"
    """See the SQL and the plan a query took (``debug=true``)."""
