"""The production warehouse: BigQuery through dagster-gcp, with polars frames.

Tables are partitioned by day on the asset's ``partition_expr`` column and clustered by
``symbol``; dagster-gcp deletes a partition's rows before they are written again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import dagster as dg
import polars as pl
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_gcp.bigquery.io_manager import BigQueryClient, BigQueryIOManager
from google.cloud import bigquery
from pydantic import Field

from resources.warehouse import _count_metadata, _partition_expr, _partition_windows, _table_name
from sapphire_warehouse import bigquery as bq
from sapphire_warehouse.partitions import (
    check_within_partitions,
)


def _config_str(context: dg.OutputContext | dg.InputContext, field: str) -> str | None:
    value = (context.resource_config or {}).get(field)
    return str(value) if value else None


def _config_float(context: dg.OutputContext | dg.InputContext, field: str) -> float | None:
    value = (context.resource_config or {}).get(field)
    return float(cast("float", value)) if value is not None else None


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
