"""Redshift's pure pieces: parameters in the connector's ``format`` style, the load path
choice, insert chunking, staging keys, and the factory's refusal without credentials."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from gristmill.config import RedshiftSettings, RedshiftStagingSettings, Settings
from gristmill.warehouse.redshift import sql as rs
from gristmill.warehouse.redshift.staging import to_format, use_copy
from gristmill.warehouse.registry import capabilities, dialect, open_warehouse


def test_named_and_positional_parameters_become_format_style() -> None:
    text, values = to_format(
        "SELECT 1 FROM t WHERE a = %(log)s AND b = %(grp)s AND c = %(log)s", {"log": 1, "grp": 2}
    )
    assert text == "SELECT 1 FROM t WHERE a = %s AND b = %s AND c = %s"
    assert values == [1, 2, 1]
    text, values = to_format("INSERT INTO t VALUES (%s, %s)", ["x", 3])
    assert (text, values) == ("INSERT INTO t VALUES (%s, %s)", ["x", 3])


def test_percent_signs_outside_quotes_are_escaped_inside_left_alone() -> None:
    text, values = to_format(
        "SELECT a % 2, '100%(x)s%', 'it\\'s %s', \"col%\" FROM t WHERE b = %(b)s", {"b": "v"}
    )
    assert text == "SELECT a %% 2, '100%(x)s%', 'it\\'s %s', \"col%\" FROM t WHERE b = %s"
    assert values == ["v"]


def test_a_named_parameter_needs_a_mapping() -> None:
    with pytest.raises(AssertionError):
        to_format("SELECT %(a)s", [1])


def test_load_path_depends_on_bucket_and_size() -> None:
    cfg = RedshiftSettings(staging=RedshiftStagingSettings(bucket="b"), copy_min_rows=100)
    assert use_copy(cfg, 100)
    assert not use_copy(cfg, 99)
    assert not use_copy(RedshiftSettings(copy_min_rows=1), 10)


def test_insert_chunks_cover_every_row_within_the_parameter_limit() -> None:
    chunks = rs.insert_chunks(1000, 20, max_params=32_000)
    assert chunks[0] == (0, 1000)
    chunks = rs.insert_chunks(5000, 20, max_params=32_000)
    assert [n for _, n in chunks] == [1600, 1600, 1600, 200]
    assert sum(n for _, n in chunks) == 5000
    assert all(n * 20 <= 32_000 for _, n in chunks)


def test_staging_keys_are_safe_and_distinct() -> None:
    a = rs.staging_key("/gm/staging/", "kafka:t:loader.p0:1-9", 0)
    b = rs.staging_key("/gm/staging/", "kafka:t:loader.p0:1-9", 1)
    assert a == "gm/staging/kafka_t_loader.p0_1-9/t0.parquet"
    assert a != b


def test_copy_renders_url_and_role_as_escaped_literals() -> None:
    copy = rs.copy_from_s3("_gm_batch_0", "s3://b/k'1.parquet", "arn:aws:iam::1:role/r")
    assert copy == (
        "COPY \"_gm_batch_0\" FROM 's3://b/k\\'1.parquet' IAM_ROLE 'arn:aws:iam::1:role/r' "
        "FORMAT PARQUET"
    )


def test_registry_knows_redshift_and_create_names_missing_settings() -> None:
    assert dialect("redshift") == "redshift"
    caps = capabilities("redshift")
    assert caps.upsert_by_merge
    assert caps.transactions
    assert not caps.native_partitioning
    settings = Settings(warehouse=RedshiftSettings(host="h", password=SecretStr("p")))
    with pytest.raises(ValueError, match="GRISTMILL_WAREHOUSE__USER"):
        open_warehouse(settings)
