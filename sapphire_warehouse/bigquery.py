"""Moving polars frames in and out of BigQuery tables, partitioned by day and clustered by symbol.

Frames travel as Parquet through ``load_table_from_file``: it keeps column types exactly, needs
no pandas, and also works against the local BigQuery emulator used in tests (where
``load_table_from_dataframe`` and ``load_table_from_json`` do not). Tables are created explicitly
with a schema derived from the frame, so their partitioning and clustering never depend on a
load job's auto-creation.
"""

from __future__ import annotations

import io

import polars as pl
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

CLUSTER_COLUMN = "symbol"


def make_client(
    project: str, location: str | None = None, api_endpoint: str | None = None
) -> bigquery.Client:
    """A client for ``project``; with ``api_endpoint`` (an emulator) it sends no credentials."""
    if api_endpoint:
        return bigquery.Client(
            project=project,
            location=location,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=api_endpoint),
        )
    return bigquery.Client(project=project, location=location)


def _field_type(dtype: pl.DataType, column: str) -> str:
    if isinstance(dtype, pl.Datetime):
        # A zone-aware instant is a TIMESTAMP; a naive wall-clock time is a DATETIME.
        return "TIMESTAMP" if dtype.time_zone is not None else "DATETIME"
    if dtype == pl.Date:
        return "DATE"
    if dtype == pl.Time:
        return "TIME"
    if dtype == pl.Boolean:
        return "BOOL"
    if dtype.is_integer():
        return "INT64"
    if dtype.is_float():
        return "FLOAT64"
    if dtype.is_decimal():
        return "NUMERIC"
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        return "STRING"
    if dtype == pl.Binary:
        return "BYTES"
    raise TypeError(f"column {column!r} has type {dtype}, which has no BigQuery mapping here")


def schema_for(frame: pl.DataFrame) -> list[bigquery.SchemaField]:
    """The BigQuery schema of ``frame``'s columns (all NULLABLE)."""
    return [
        bigquery.SchemaField(name, _field_type(dtype, name), mode="NULLABLE")
        for name, dtype in frame.schema.items()
    ]


def _to_parquet(frame: pl.DataFrame) -> io.BytesIO:
    # Categoricals and enums go over as plain strings, which every loader understands.
    plain = frame.with_columns(
        pl.col(name).cast(pl.String)
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Categorical | pl.Enum)
    )
    buffer = io.BytesIO()
    plain.write_parquet(buffer)
    buffer.seek(0)
    return buffer


def ensure_table(
    client: bigquery.Client, table_id: str, frame: pl.DataFrame, partition_field: str | None
) -> bigquery.Table:
    """Create ``table_id`` for ``frame`` unless it exists: day-partitioned on ``partition_field``
    when given, clustered by ``symbol`` when the frame has that column."""
    table = bigquery.Table(table_id, schema=schema_for(frame))
    if partition_field is not None:
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=partition_field
        )
    if CLUSTER_COLUMN in frame.columns:
        table.clustering_fields = [CLUSTER_COLUMN]
    return client.create_table(table, exists_ok=True)


def append_frame(
    client: bigquery.Client,
    table_id: str,
    frame: pl.DataFrame,
    partition_field: str | None,
    timeout: float | None = None,
) -> int:
    """Append ``frame`` to ``table_id`` (created if needed); returns the rows loaded."""
    ensure_table(client, table_id, frame, partition_field)
    if frame.height == 0:
        return 0
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        schema=schema_for(frame),
    )
    if partition_field is not None:
        config.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=partition_field
        )
    if CLUSTER_COLUMN in frame.columns:
        config.clustering_fields = [CLUSTER_COLUMN]
    # No size given: the client then uses a resumable upload, which the emulator accepts too.
    job = client.load_table_from_file(_to_parquet(frame), table_id, job_config=config)
    job.result(timeout=timeout)
    return frame.height


def query_frame(client: bigquery.Client, sql: str, timeout: float | None = None) -> pl.DataFrame:
    """Run ``sql`` and return its result as a polars frame."""
    rows = client.query(sql, timeout=timeout).result(timeout=timeout)
    frame = pl.from_arrow(rows.to_arrow(create_bqstorage_client=False))
    assert isinstance(frame, pl.DataFrame)
    return frame
