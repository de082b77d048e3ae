"""(c) The seed-style baseline: one INSERT per event into PostgreSQL (seed 001's
``platform_events`` table), autocommit, as the seed's edge function and emit() do."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from gristmill.demo.marketplace import DemoConfig, generate

DSN = "host=127.0.0.1 port=5432 dbname=postgres user=postgres"
DDL = """
CREATE TABLE IF NOT EXISTS bench_platform_events (
  event_id TEXT PRIMARY KEY,
  event_type TEXT NOT NULL,
  event_category TEXT NOT NULL,
  user_id TEXT,
  entity_type TEXT,
  entity_id TEXT,
  event_data JSONB,
  metadata JSONB,
  source TEXT,
  timestamp TIMESTAMPTZ NOT NULL,
  session_id TEXT,
  ingested_at TIMESTAMPTZ DEFAULT now()
)"""


def single_inserts(events: int) -> dict[str, Any]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the dev extra installs it
        return {"skipped": "psycopg is not installed"}
    traffic = generate(DemoConfig(events=events, duplicate_rate=0, invalid_rate=0, seed=6))
    try:
        conn = psycopg.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        return {"skipped": f"PostgreSQL not reachable: {exc}"}
    with conn:
        conn.execute("DROP TABLE IF EXISTS bench_platform_events")
        conn.execute(DDL)
        sql = (
            "INSERT INTO bench_platform_events (event_id, event_type, event_category, "
            "user_id, entity_type, entity_id, event_data, source, timestamp, session_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        )
        t0 = time.perf_counter()
        for ev in traffic.events:
            conn.execute(
                sql,
                (
                    ev.get("event_id") or str(uuid.uuid4()),
                    ev["event_type"],
                    "transaction",
                    ev.get("user_id"),
                    "order",
                    ev["properties"].get("order_id"),
                    orjson.dumps(ev["properties"]).decode(),
                    "bench",
                    ev["occurred_at"],
                    ev.get("session_id"),
                ),
            )
        elapsed = time.perf_counter() - t0
        conn.execute("DROP TABLE bench_platform_events")
    return {"events": len(traffic.events), "rows_per_s": round(len(traffic.events) / elapsed)}
