"""The warehouse IO managers: one ``io_manager`` key, local Parquet or BigQuery behind it.

Assets return ``polars.DataFrame``. A time-partitioned asset names its time column in its
definition metadata, ``metadata={"partition_expr": "ts"}`` (the dagster-gcp convention). A run
may hold many partitions (single-run backfills) and an input may span many upstream partitions
(look-back mappings), some of which may not exist yet.

- :class:`LocalWarehouseIOManager`: the embedded default, Parquet files under a folder that
  analysts query through DuckDB (:mod:`sapphire_warehouse.sql`).
- :class:`resources.warehouse_bigquery.BigQueryWarehouseIOManager`: production,
  day-partitioned and symbol-clustered tables (its own module, so local runs never import the
  BigQuery client).

Both reject an output with rows outside the run's partitions before writing anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from sapphire_warehouse import parquet_store
from sapphire_warehouse.partitions import (
    PartitionWindow,
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
