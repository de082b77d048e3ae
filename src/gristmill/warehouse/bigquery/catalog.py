"""BigQuery's catalogue for ``gristmill provision``, through the client: a dataset per schema
(``get_dataset``), a table's fields, time partitioning and clustering fields (``get_table``),
normalised to compare with the rendered DDL. Pure parts (normalising, layouts, connector
hints) need no credentials and are tested here; reading runs in the live suite."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from gristmill.warehouse.bigquery.factory import DIALECT
from gristmill.warehouse.provision.model import Catalogue, TableState

if TYPE_CHECKING:
    from gristmill.config import Settings
    from gristmill.pack.models import Pack
    from gristmill.warehouse.bigquery.client import BigQueryWarehouse

CLUSTERING_IS_INDEX = False
SINK_CLASS = "com.wepay.kafka.connect.bigquery.BigQuerySinkConnector"


def render(e: exp.Expr) -> str:
    return e.sql(dialect=DIALECT)


def normalize_type(text: str) -> str:
    return exp.DataType.build(text, dialect=DIALECT).sql(dialect=DIALECT).upper()


def field_type(field_type: str, mode: str | None) -> str:
    """A schema field as DDL would spell it: ``INTEGER`` is INT64, REPEATED is an ARRAY."""
    base = normalize_type(field_type)
    return f"ARRAY<{base}>" if (mode or "").upper() == "REPEATED" else base


def _partition_text(e: exp.Expr) -> str:
    if isinstance(e, exp.Date):
        return f"day({e.this.name})"
    if isinstance(e, exp.TimestampTrunc | exp.DateTrunc | exp.DatetimeTrunc):
        return f"{e.text('unit').lower()}({e.this.name})"
    return re.sub(r"[\s`]", "", e.sql(dialect=DIALECT)).lower()


def partition_of(kind: str | None, column: str | None) -> str | None:
    """``time_partitioning`` (type and field) in the form :func:`layout` gives."""
    return f"{kind.lower()}({column})" if kind and column else None


def layout(create: exp.Create) -> tuple[str | None, tuple[str, ...]]:
    props = create.args.get("properties")
    if props is None:
        return None, ()
    part = props.find(exp.PartitionedByProperty)
    cluster = props.find(exp.Cluster, exp.ClusterProperty)
    keys = tuple(c.name for c in cluster.expressions) if cluster is not None else ()
    return (_partition_text(part.this) if part is not None else None), keys


def index_clustering(index: exp.Create) -> tuple[str, ...] | None:
    return None


def read(wh: BigQueryWarehouse, schemas: Sequence[str], tables: Sequence[exp.Table]) -> Catalogue:
    from google.api_core import exceptions as gexc

    client = wh._client
    found: set[str] = set()
    for name in schemas:
        try:
            client.get_dataset(f"{client.project}.{name}")
            found.add(name)
        except gexc.NotFound:
            pass
    out: dict[str, TableState] = {}
    for ref in tables:
        if ref.db not in found:
            continue
        try:
            t = client.get_table(f"{client.project}.{ref.db}.{ref.name}")
        except gexc.NotFound:
            continue
        tp = t.time_partitioning
        out[f"{ref.db}.{ref.name}"] = TableState(
            {str(f.name): field_type(str(f.field_type), f.mode) for f in t.schema},
            partition_of(tp.type_ if tp else None, tp.field if tp else None),
            tuple(t.clustering_fields or ()),
        )
    return Catalogue(frozenset(found), out)


def execute(wh: BigQueryWarehouse, statements: Sequence[str]) -> None:
    """Run a plan's statements one job each, in order (each is idempotent)."""
    for stmt in statements:
        wh._job(stmt, None, None)


def scalar(wh: BigQueryWarehouse, text: str) -> Any:
    rows = list(wh._job(text, None, None).result())
    return rows[0][0] if rows else None


def connector_hints(
    packs: Sequence[Pack], bus: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """Kafka Connect's BigQuery sink and Dataflow's Kafka-to-BigQuery template, for teams that
    land the topic themselves instead of running ``gristmill load``."""
    from gristmill.config import BigQuerySettings

    cfg = settings.warehouse if isinstance(settings.warehouse, BigQuerySettings) else None
    project = (cfg.project if cfg else None) or "<project>"
    prefix = cfg.dataset_prefix if cfg else ""
    landing = cfg.landing_dataset if cfg else None
    topic = str(bus.get("topic") or "<topic: the log is not Kafka>")
    sinks = []
    for pack in packs:
        dataset = landing or prefix + pack.dataset
        for name, spec in sorted(pack.spec.tables.items()):
            sinks.append(
                {
                    "name": f"gristmill-{pack.name}-{name}",
                    "config": {
                        "connector.class": SINK_CLASS,
                        "topics": topic,
                        "project": project,
                        "defaultDataset": dataset,
                        "topic2TableMap": f"{topic}:{name}",
                        "autoCreateTables": "false",
                        "allowNewBigQueryFields": "false",
                        "timePartitioningType": spec.partition_by.granularity.upper(),
                        "partitioningField": spec.partition_by.column,
                        "clusteringPartitionFieldNames": ",".join(spec.cluster_by[:4]),
                        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                        "value.converter.schemas.enable": "false",
                    },
                    "dataflow_template": {
                        "template": "Kafka_to_BigQuery",
                        "parameters": {
                            "inputTopics": topic,
                            "outputTableSpec": f"{project}:{dataset}.{name}",
                        },
                    },
                }
            )
    return {
        "loader": "gristmill load reads the log into these tables (exactly once, deduped)",
        "kafka_to_bigquery": sinks,
        "routing": "one topic carries every table's events: route by event_type "
        "(tables[].event_types) with a filter per sink; the sinks do not dedupe",
    }
