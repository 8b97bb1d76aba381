"""The warehouse IO managers: one ``io_manager`` key, local Parquet or BigQuery behind it.

Assets return ``polars.DataFrame``. A time-partitioned asset names its time column in its
definition metadata, ``metadata={"partition_expr": "ts"}`` (the dagster-gcp convention). A run
may hold many partitions (single-run backfills) and an input may span many upstream partitions
(look-back mappings), some of which may not exist yet.

- :class:`LocalWarehouseIOManager`: the embedded default, Parquet files under a folder that
  analysts query through DuckDB (:mod:`sapphire_warehouse.sql`).
- :class:`BigQueryWarehouseIOManager`: production, day-partitioned and symbol-clustered tables.

Both reject an output with rows outside the run's partitions before writing anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import dagster as dg
import polars as pl
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_gcp.bigquery.io_manager import BigQueryClient, BigQueryIOManager
from google.cloud import bigquery
from pydantic import Field

from sapphire_warehouse import bigquery as bq
from sapphire_warehouse import parquet_store
from sapphire_warehouse.partitions import (
    PartitionWindow,
    check_within_partitions,
    split_by_partition,
)

# Per-partition row counts go into run metadata only up to this many partitions (about a year
# of days), so a long backfill does not produce an unreadable metadata entry.
_MAX_PARTITIONS_IN_METADATA = 400


def _table_name(context: dg.OutputContext | dg.InputContext) -> str:
    return context.asset_key.to_user_string() if context.has_asset_key else context.name


def _partition_expr(metadata: Mapping[str, Any] | None, table: str) -> str:
    column = (metadata or {}).get("partition_expr")
    if not isinstance(column, str):
        raise ValueError(
            f"{table} is partitioned but has no 'partition_expr' in its definition metadata; "
            'declare its time column, e.g. @dg.asset(metadata={"partition_expr": "ts"})'
        )
    return column


def _partition_windows(context: dg.OutputContext | dg.InputContext) -> list[PartitionWindow]:
    """The time windows of the context's partitions (the upstream ones for an input)."""
    partitions_def = context.asset_partitions_def
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise TypeError(
            f"{_table_name(context)}: the warehouse stores time-window partitions only, "
            f"not {type(partitions_def).__name__}"
        )
    windows = []
    for key in context.asset_partition_keys:
        window = partitions_def.time_window_for_partition_key(key)
        windows.append(PartitionWindow(key, window.start, window.end))
    return windows


def _count_metadata(counts: Mapping[str, int]) -> dict[str, dg.MetadataValue]:
    if len(counts) > _MAX_PARTITIONS_IN_METADATA:
        return {}
    return {"partition_row_counts": dg.MetadataValue.json(dict(counts))}


def _config_str(context: dg.OutputContext | dg.InputContext, field: str) -> str | None:
    value = (context.resource_config or {}).get(field)
    return str(value) if value else None


def _config_float(context: dg.OutputContext | dg.InputContext, field: str) -> float | None:
    value = (context.resource_config or {}).get(field)
    return float(cast("float", value)) if value is not None else None


class LocalWarehouseIOManager(dg.ConfigurableIOManager):
    """Stores asset outputs as Parquet files under ``root``, one file per partition.

    Attributes:
        root (str): the warehouse folder. Each asset gets ``<root>/<key path>/`` holding
            ``<partition key>.parquet`` per partition, or ``data.parquet`` when unpartitioned.

    Writes are atomic renames, so concurrent runs and readers need no lock; re-materialising a
    partition replaces its file. Loading a range of upstream partitions skips those never
    written; when none of them exists, the result is an empty frame with the table's schema,
    and an error when the table was never written at all (its schema is unknown).
    """

    root: str = Field(description="Folder of the local warehouse (one sub-folder per asset).")

    def _table_dir(self, context: dg.OutputContext | dg.InputContext) -> Path:
        if not context.has_asset_key:
            raise TypeError(f"{context.name}: the warehouse stores asset outputs only")
        return parquet_store.table_dir(self.root, context.asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        name = _table_name(context)
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{name}: the warehouse stores polars DataFrames, got {type(obj)}")
        table = self._table_dir(context)

        if not context.has_asset_partitions:
            path = table / parquet_store.UNPARTITIONED_FILE
            parquet_store.write_atomically(path, obj)
            context.add_output_metadata(
                {"dagster/row_count": obj.height, "path": dg.MetadataValue.path(str(path))}
            )
            return

        column = _partition_expr(context.definition_metadata, name)
        # Split (and so validate) everything before the first file is written.
        parts = split_by_partition(obj, column, _partition_windows(context), name)
        for key, part in parts.items():
            parquet_store.write_atomically(parquet_store.partition_file(table, key), part)
        context.add_output_metadata(
            {
                "dagster/row_count": obj.height,
                "path": dg.MetadataValue.path(str(table)),
                "partitions_written": len(parts),
                **_count_metadata({key: part.height for key, part in parts.items()}),
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        name = _table_name(context)
        table = self._table_dir(context)
        if context.has_asset_partitions:
            paths = [parquet_store.partition_file(table, k) for k in context.asset_partition_keys]
        else:
            paths = [table / parquet_store.UNPARTITIONED_FILE]
        frame = parquet_store.read_files(paths)
        if frame is not None:
            return frame
        empty = parquet_store.empty_like_table(table)
        if empty is None:
            raise FileNotFoundError(
                f"{name} has never been materialised into the warehouse ({table} holds no "
                "Parquet files); materialise it before its downstream assets"
            )
        context.log.info(f"{name}: none of the requested partitions exists yet; loading 0 rows")
        return empty


class PolarsBigQueryTypeHandler(DbTypeHandler[pl.DataFrame]):
    """Writes and reads polars frames for dagster-gcp's BigQuery IO manager.

    dagster-gcp has already deleted the output's partitions (or truncated an unpartitioned
    table) when ``handle_output`` runs, so appending here replaces them without duplicates.
    """

    def handle_output(
        self,
        context: dg.OutputContext,
        table_slice: TableSlice,
        obj: pl.DataFrame,
        connection: bigquery.Client,
    ) -> Mapping[str, Any]:
        dimensions = table_slice.partition_dimensions or []
        partition_field = dimensions[0].partition_expr if dimensions else None
        table_id = f"{table_slice.database}.{table_slice.schema}.{table_slice.table}"
        timeout = _config_float(context, "timeout")
        rows = bq.append_frame(connection, table_id, obj, partition_field, timeout=timeout)
        return {"dagster/row_count": rows, "table": table_id}

    def load_input(
        self, context: dg.InputContext, table_slice: TableSlice, connection: bigquery.Client
    ) -> pl.DataFrame:
        timeout = _config_float(context, "timeout")
        return bq.query_frame(
            connection, BigQueryClient.get_select_statement(table_slice), timeout=timeout
        )

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return [pl.DataFrame]


class _EndpointBigQueryClient(BigQueryClient):
    """dagster-gcp's client, made to honour the ``api_endpoint`` field (the emulator)."""

    @staticmethod
    @contextmanager
    def connect(
        context: dg.OutputContext | dg.InputContext, table_slice: TableSlice
    ) -> Iterator[bigquery.Client]:
        client = bq.make_client(
            project=str((context.resource_config or {})["project"]),
            location=_config_str(context, "location"),
            api_endpoint=_config_str(context, "api_endpoint"),
        )
        try:
            yield client
        finally:
            client.close()


class _CheckedDbIOManager(DbIOManager):
    """Validates partition bounds before dagster-gcp deletes anything."""

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        counts: dict[str, int] | None = None
        if context.has_asset_partitions and isinstance(obj, pl.DataFrame):
            name = _table_name(context)
            partitions_def = context.asset_partitions_def
            # dagster-gcp writes the window bounds as zone-less literals that BigQuery reads as
            # UTC; any other zone would delete the wrong hours.
            if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition) and (
                partitions_def.timezone not in ("UTC", "Etc/UTC")
            ):
                raise ValueError(f"{name}: BigQuery partitions must use UTC time windows")
            column = _partition_expr(context.definition_metadata, name)
            counts = check_within_partitions(obj, column, _partition_windows(context), name)
        super().handle_output(context, obj)
        if counts is not None:
            context.add_output_metadata(
                {"partitions_written": len(counts), **_count_metadata(counts)}
            )


class BigQueryWarehouseIOManager(BigQueryIOManager):
    """Stores asset outputs as BigQuery tables, partitioned by day and clustered by symbol.

    Fields (besides dagster-gcp's ``write_mode``, ``gcp_credentials`` and ``timeout``):
        project (str): GCP project, from ``dg.EnvVar("GCP_PROJECT")``.
        dataset (str | None): dataset for every table, from ``dg.EnvVar("BIGQUERY_DATASET")``;
            when unset, the asset key's prefix (or ``public``).
        location (str | None): BigQuery location, e.g. ``EU``; the project's default when unset.
        api_endpoint (str | None): a BigQuery-compatible endpoint such as the local emulator
            (``http://127.0.0.1:9050``); requests then go without credentials.

    A table is named by the asset key's last part. A partitioned asset's table is
    day-partitioned on its ``partition_expr`` column (a TIMESTAMP or DATETIME, in UTC), and
    clustered by ``symbol`` when it has that column. Re-materialising a partition first deletes
    the rows in its time window, then appends.
    """

    api_endpoint: str | None = Field(
        default=None,
        description="Alternative API endpoint (the BigQuery emulator); uses no credentials.",
    )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PolarsBigQueryTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pl.DataFrame

    def create_io_manager(self, context: dg.InitResourceContext) -> DbIOManager:
        return _CheckedDbIOManager(
            db_client=_EndpointBigQueryClient(
                write_mode=self.write_mode, gcp_credentials=self.gcp_credentials
            ),
            io_manager_name="BigQueryWarehouseIOManager",
            database=self.project,
            schema=self.dataset,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
        )


__all__ = [
    "BigQueryWarehouseIOManager",
    "LocalWarehouseIOManager",
    "PolarsBigQueryTypeHandler",
]
