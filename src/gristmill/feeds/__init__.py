"""CSV feeds: templates a pack declares, preview -> commit -> transform into fact rows."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from gristmill.config import Settings
from gristmill.feeds.service import FeedService
from gristmill.feeds.store import FeedStore
from gristmill.feeds.template import Feed, find_feeds, load_feeds
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Warehouse

__all__ = ["Feed", "FeedService", "build_feed_service", "load_feeds"]


def build_feed_service(
    settings: Settings, packs: Mapping[str, Pack], engine: sa.Engine, warehouse: Warehouse
) -> FeedService:
    """The feed service of one process: templates of the served packs, stores, worker."""
    return FeedService(
        settings.feeds,
        settings.data_dir,
        packs,
        find_feeds(packs),
        FeedStore(engine),
        warehouse,
    )
