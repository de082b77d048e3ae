"""The platform pack (seed 001): categories and retention as the seed states them, one schema
per event type, and one valid and one invalid event of every type through the collector's
framing path (native dialect -> schema registry -> promotion and entity mapping)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from gristmill.collect.pipeline import Outcome
from gristmill.collect.service import Parser
from gristmill.config import LimitSettings
from gristmill.core.envelope import Reason
from gristmill.pack import load_pack
from gristmill.pack.models import ColumnType
from tests.conftest import PACKS

PACK = load_pack(PACKS / "platform")
PARSER = Parser({"platform": PACK}, LimitSettings())
YEAR = timedelta(days=365)

SEED_CATEGORIES: dict[str, tuple[timedelta, set[str]]] = {
    "transaction": (
        7 * YEAR,
        {
            "project.created",
            "project.updated",
            "project.deleted",
            "proposal.submitted",
            "proposal.accepted",
            "proposal.rejected",
            "milestone.created",
            "milestone.approved",
            "milestone.completed",
            "payment.initiated",
            "payment.completed",
            "payment.failed",
        },
    ),
    "interaction": (
        YEAR,
        {
            "profile.viewed",
            "project.viewed",
            "search.performed",
            "filter.applied",
            "message.sent",
            "notification.clicked",
        },
    ),
    "user_activity": (
        2 * YEAR,
        {
            "user.login",
            "user.logout",
            "user.registered",
            "session.started",
            "session.ended",
            "password.changed",
            "mfa.enabled",
            "mfa.disabled",
        },
    ),
    "content": (
        7 * YEAR,
        {
            "review.posted",
            "review.updated",
            "portfolio.created",
            "portfolio.updated",
            "profile.updated",
            "github.synced",
        },
    ),
}

PROJECT = {
    "project_id": "prj-1",
    "title": "E-commerce Platform",
    "budget": 5000,
    "project_type": "fixed",
    "is_featured": False,
    "skills": ["React", "Node.js", "PostgreSQL"],
}
PAYMENT = {"payment_id": "pay-1", "amount": 1250.5, "currency": "USD", "milestone_id": "ms-1"}
REVIEW = {
    "review_id": "rev-1",
    "reviewee_user_id": "client-1",
    "reviewee_type": "client",
    "rating_overall": 4.5,
}

VALID: dict[str, dict[str, Any]] = {
    "project.created": PROJECT,
    "project.updated": {**PROJECT, "budget": 6500.0, "changed_fields": ["budget"]},
    "project.deleted": {"project_id": "prj-1", "reason": "duplicate"},
    "proposal.submitted": {"proposal_id": "prop-1", "project_id": "prj-1", "bid_amount": 4200},
    "proposal.accepted": {"proposal_id": "prop-1", "project_id": "prj-1", "bid_amount": 4200},
    "proposal.rejected": {"proposal_id": "prop-2", "project_id": "prj-1"},
    "milestone.created": {
        "milestone_id": "ms-1",
        "project_id": "prj-1",
        "amount": 1250.5,
        "due_date": "2025-11-01",
    },
    "milestone.approved": {"milestone_id": "ms-1", "project_id": "prj-1", "amount": 1250.5},
    "milestone.completed": {"milestone_id": "ms-1", "project_id": "prj-1"},
    "payment.initiated": PAYMENT,
    "payment.completed": PAYMENT,
    "payment.failed": {**PAYMENT, "failure_reason": "card_declined"},
    "profile.viewed": {"profile_user_id": "dev-9"},
    "project.viewed": {"project_id": "prj-1"},
    "search.performed": {
        "query": "react developer",
        "filters": {"skills": ["React", "TypeScript"], "budget_min": 1000},
        "results_count": 15,
        "search_time_ms": 350,
    },
    "filter.applied": {"filter_name": "skills", "filter_value": ["React"]},
    "message.sent": {"message_id": "msg-1", "project_id": "prj-1", "message_length": 120},
    "notification.clicked": {"notification_id": "ntf-1", "channel": "email"},
    "user.login": {"login_method": "github", "mfa_used": True},
    "user.logout": {"session_duration_ms": 600_000},
    "user.registered": {"login_method": "email", "email": "ada@example.com"},
    "session.started": {"entry_path": "/projects"},
    "session.ended": {"duration_ms": 600_000, "page_views": 7},
    "password.changed": {"via_reset": True},
    "mfa.enabled": {"mfa_method": "totp"},
    "mfa.disabled": {"mfa_method": "totp"},
    "review.posted": REVIEW,
    "review.updated": {**REVIEW, "rating_overall": 5, "changed_fields": ["rating_overall"]},
    "portfolio.created": {"portfolio_id": "pf-1", "title": "Shop", "skills": ["Vue"]},
    "portfolio.updated": {"portfolio_id": "pf-1", "changed_fields": ["title"]},
    "profile.updated": {
        "profile_user_id": "dev-9",
        "changed_fields": ["phone", "address"],
        "phone": "+1 555 0100",
        "address": {"city": "Lisbon"},
    },
    "github.synced": {"repos_synced": 12, "status": "success"},
}

INVALID: dict[str, dict[str, Any]] = {
    "project.created": {**PROJECT, "budget": "5000"},  # a number, not a string
    "project.updated": {"title": "no project_id"},
    "project.deleted": {},
    "proposal.submitted": {"proposal_id": "prop-1", "project_id": "prj-1"},  # no bid_amount
    "proposal.accepted": {"proposal_id": "prop-1"},
    "proposal.rejected": {"proposal_id": "prop-2", "project_id": 7},
    "milestone.created": {"milestone_id": "ms-1", "project_id": "prj-1", "amount": -1},
    "milestone.approved": {"milestone_id": "ms-1", "project_id": "prj-1"},  # no amount
    "milestone.completed": {"project_id": "prj-1"},
    "payment.initiated": {"payment_id": "pay-1"},
    "payment.completed": {**PAYMENT, "currency": "usd"},
    "payment.failed": {"amount": 10},
    "profile.viewed": {"profile_user_id": ""},
    "project.viewed": {"project_id": None},
    "search.performed": {"query": "react", "results_count": -3},
    "filter.applied": {"filter_value": "React"},
    "message.sent": {"message_id": "msg-1", "has_attachments": "yes"},
    "notification.clicked": {},
    "user.login": {"login_method": "github", "mfa_used": "true"},
    "user.logout": {"session_duration_ms": 1.5},
    "user.registered": {"email": 42},
    "session.started": {"referrer": ["not", "a", "string"]},
    "session.ended": {"page_views": -1},
    "password.changed": {"via_reset": 1},
    "mfa.enabled": {"mfa_method": 3},
    "mfa.disabled": {"mfa_method": False},
    "review.posted": {**REVIEW, "rating_overall": 6},
    "review.updated": {"rating_overall": 4},
    "portfolio.created": {"portfolio_id": "pf-1", "skills": "Vue"},
    "portfolio.updated": {},
    "profile.updated": {"profile_user_id": "dev-9", "address": 12},
    "github.synced": {"repos_synced": "12"},
}

ENRICHED = {"event_category", "user_role", "user_tenure_days", "geo_location", "device_info"}


def native(event_type: str, props: dict[str, Any], n: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"evt-{event_type}-{n}",
        "event_type": event_type,
        "occurred_at": "2025-10-01T12:00:00Z",
        "user_id": "user-1",
        "session_id": "sess-1",
        "properties": props,
        "context": {"ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0"},
    }


def collect(*events: dict[str, Any]) -> Outcome:
    """Frame a native batch as ``POST /v1/events`` does (without appending it to a log)."""
    prepared = PARSER.prepare(
        pack="platform", source="web", dialect="native", raw=orjson.dumps(list(events))
    )
    assert prepared.outcome is not None
    return prepared.outcome


def test_categories_and_retention_are_the_seeds() -> None:
    spec = PACK.spec
    assert set(spec.categories) == set(SEED_CATEGORIES)
    for name, (retention, event_types) in SEED_CATEGORIES.items():
        assert spec.categories[name].retention == retention, name
        assert spec.categories[name].description
        declared = {et for et, s in spec.event_types.items() if s.category == name}
        assert declared == event_types, name


def test_every_event_type_has_a_schema() -> None:
    assert set(PACK.spec.event_types) == set(VALID) == set(INVALID)
    for et, spec in PACK.spec.event_types.items():
        assert spec.versions == [1]
        assert set(PACK.schemas[et]) == {1}
        assert (PACK.root / "schemas" / et / "1.json").is_file()
        assert PACK.schemas[et][1]["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_one_table_as_the_seed_lays_it_out() -> None:
    assert set(PACK.spec.tables) == {"platform_events"}
    table = PACK.spec.tables["platform_events"]
    assert table.partition_by.column == "occurred_at"
    assert table.partition_by.granularity == "day"
    assert table.cluster_by == ["event_type", "user_id"]
    assert "event_type" in table.dimensions
    cols = {c.name: c.type for c in PACK.columns("platform_events")}
    assert (ENRICHED | {"ingested_at"}) <= set(cols), "the seed's enriched columns"
    assert set(PACK.spec.enrichment.columns()) == ENRICHED | {"ingested_at"}
    assert cols["budget"] is ColumnType.FLOAT64  # currency units, as the seed's clients send
    assert cols["amount"] is ColumnType.FLOAT64
    assert cols["results_count"] is ColumnType.INT64


def test_governance_strips_the_seeds_gdpr_keys() -> None:
    gov = PACK.spec.governance
    assert gov.pii.properties == ["email", "phone", "address"]
    assert gov.pii.context == ["ip_address", "user_agent", "ip"]
    assert gov.subject_properties == ["email"]
    assert gov.aggregates_outlive_raw is True


def test_metrics_rollups_roles_and_view() -> None:
    spec = PACK.spec
    assert spec.metrics["unique_users"].type == "count_distinct"
    assert spec.metrics["unique_users"].column == "user_id"
    for name, et in [
        ("projects_created", "project.created"),
        ("proposals_submitted", "proposal.submitted"),
        ("payments_completed", "payment.completed"),
    ]:
        assert spec.metrics[name].type == "count"
        assert spec.metrics[name].filter == {"event_type": et}
    assert spec.metrics["payment_volume"].type == "sum"
    assert spec.metrics["payment_volume"].column == "amount"
    assert spec.rollups["platform_hourly"].grain == "hour"
    assert spec.rollups["platform_daily"].grain == "day"
    for r in spec.rollups.values():
        assert r.dimensions == ["event_type", "event_category"]
        assert {"events", "unique_users", "payment_volume"} <= set(r.metrics)
    assert set(spec.roles["analyst"].permissions) == {
        "metrics:read",
        "events:read",
        "freshness:read",
    }
    assert {"quarantine:replay", "debug"} <= set(spec.roles["admin"].permissions)
    view = spec.views["platform_overview"]
    assert view.route == "/api/v1/platform/overview"
    assert view.roles == ["admin"]


@pytest.mark.parametrize("event_type", sorted(VALID))
def test_valid_event_is_accepted(event_type: str) -> None:
    out = collect(native(event_type, VALID[event_type]))
    assert out.results[0]["status"] == "accepted", out.results
    (ev,) = out.frame.events
    assert ev.event_type == event_type
    assert ev.schema_version == 1
    assert ev.user_id == "user-1"
    entity = PACK.spec.event_types[event_type].entity
    if entity is None:
        assert ev.entity_type is None
    else:
        assert ev.entity_type == entity.type
        assert ev.entity_id == VALID[event_type].get(entity.id_property)


@pytest.mark.parametrize("event_type", sorted(INVALID))
def test_invalid_event_is_rejected_as_schema_violation(event_type: str) -> None:
    out = collect(
        native(event_type, VALID[event_type], 0), native(event_type, INVALID[event_type], 1)
    )
    ok, bad = out.results
    assert ok["status"] == "accepted"
    assert bad["status"] == "rejected"
    assert bad["reason"] == Reason.SCHEMA_VIOLATION.value, bad
    assert bad["event_id"] == f"evt-{event_type}-1"
    assert len(out.frame.rejects) == 1


def test_promoted_values_land_in_their_columns() -> None:
    out = collect(
        native("payment.completed", PAYMENT),
        native("project.created", PROJECT, 1),
        native("search.performed", VALID["search.performed"], 2),
    )
    names = [c.name for c in PACK.columns("platform_events") if c.promoted]
    rows = [dict(zip(names, ev.promoted, strict=True)) for ev in out.frame.events]
    payment, project, search = rows
    assert payment["amount"] == 1250.5
    assert payment["payment_id"] == "pay-1"
    assert payment["budget"] is None  # another event type's column stays null
    assert project["budget"] == 5000.0
    assert isinstance(project["budget"], float)
    assert project["project_type"] == "fixed"
    assert project["is_featured"] is False
    assert search["results_count"] == 15
    assert search["search_time_ms"] == 350


def test_an_unknown_event_type_is_not_a_schema_violation() -> None:
    out = collect(native("project.archived", {"project_id": "prj-1"}))
    assert out.results[0]["reason"] == Reason.UNKNOWN_EVENT_TYPE.value
