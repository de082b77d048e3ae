"""The engine sections moved to ``gristmill.config_engines`` stay importable from
``gristmill.config`` (the one import the rest of the code uses) and keep selecting by
``type`` as before the split."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel

from gristmill import config, config_engines
from gristmill.config import (
    KafkaLogSettings,
    RedshiftSettings,
    Settings,
    SQLiteLogSettings,
)


def test_every_engine_section_is_re_exported_by_config() -> None:
    public = [
        n
        for n, v in vars(config_engines).items()
        if not n.startswith("_")
        and inspect.isclass(v)
        and issubclass(v, BaseModel)
        and v.__module__ == config_engines.__name__
    ]
    assert len(public) >= 13
    for name in [*public, "LogSettings", "WarehouseSettings"]:
        assert getattr(config, name) is getattr(config_engines, name), name
        assert name in config.__all__, name


def test_sections_select_by_type_and_default_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(warehouse={"type": "redshift", "host": "h"}, log={"type": "kafka"})
    assert isinstance(s.warehouse, RedshiftSettings)
    assert s.warehouse.staging.prefix == "gristmill/staging"
    assert isinstance(s.log, KafkaLogSettings)
    monkeypatch.setenv("GRISTMILL_LOG__MAX_BYTES", "4096")
    env = Settings()
    assert isinstance(env.log, SQLiteLogSettings)
    assert env.log.max_bytes == 4096
