"""The BigQuery warehouse through real Dagster runs against the local BigQuery emulator."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from resources.warehouse_bigquery import BigQueryWarehouseIOManager
from sapphire_warehouse.bigquery import make_client, query_frame
from tests.warehouse.bqemulator import Emulator
from tests.warehouse.warehouse_defs import (
    RANGE_END,
    RANGE_START,
    ROWS_PER_DAY,
    candles,
    candles_lookback,
    candles_snapshot,
    hourly_rows,
    misdated_candles,
)

pytestmark = pytest.mark.slow


def _io_manager(emulator: Emulator, dataset: str) -> BigQueryWarehouseIOManager:
    return BigQueryWarehouseIOManager(
        project=emulator.project, dataset=dataset, api_endpoint=emulator.endpoint
    )


def _expected(day: int, run_id: str) -> pl.DataFrame:
    start = datetime(2024, 1, day, tzinfo=UTC)
    return hourly_rows(start, datetime(2024, 1, day + 1, tzinfo=UTC), run_id)


def test_partitions_are_written_replaced_without_duplicates_and_loaded_back(
    bigquery_emulator: Emulator,
) -> None:
    dataset = "warehouse_roundtrip"
    resources = {"io_manager": _io_manager(bigquery_emulator, dataset)}
    client = make_client(bigquery_emulator.project, api_endpoint=bigquery_emulator.endpoint)

    first = dg.materialize(
        [candles], tags={RANGE_START: "2024-01-01", RANGE_END: "2024-01-02"}, resources=resources
    )
    again = dg.materialize([candles], partition_key="2024-01-02", resources=resources)

    table = f"{bigquery_emulator.project}.{dataset}.candles"
    stored = query_frame(client, f"SELECT * FROM `{table}` ORDER BY ts, symbol")
    expected = pl.concat([_expected(1, first.run_id), _expected(2, again.run_id)])
    assert_frame_equal(stored, expected)
    assert stored.height == 2 * ROWS_PER_DAY  # the replaced day holds no duplicates

    metadata = client.get_table(table)
    assert metadata.time_partitioning is not None
    assert metadata.time_partitioning.type_ == "DAY"
    assert metadata.time_partitioning.field == "ts"
    assert metadata.clustering_fields == ["symbol"]

    # Loading: an unpartitioned downstream reads every partition through the IO manager.
    dg.materialize([candles, candles_snapshot], selection=[candles_snapshot], resources=resources)
    snapshot = query_frame(
        client, f"SELECT * FROM `{dataset}.candles_snapshot` ORDER BY ts, symbol"
    )
    assert_frame_equal(snapshot, expected)


def test_a_look_back_loads_only_the_upstream_days_that_exist(bigquery_emulator: Emulator) -> None:
    dataset = "warehouse_lookback"
    resources = {"io_manager": _io_manager(bigquery_emulator, dataset)}
    client = make_client(bigquery_emulator.project, api_endpoint=bigquery_emulator.endpoint)
    dg.materialize([candles], partition_key="2024-01-01", resources=resources)
    dg.materialize([candles], partition_key="2024-01-03", resources=resources)

    dg.materialize(
        [candles, candles_lookback],
        selection=[candles_lookback],
        partition_key="2024-01-03",
        resources=resources,
    )

    seen = query_frame(client, f"SELECT * FROM `{dataset}.candles_lookback` ORDER BY symbol")
    assert seen["rows_seen"].to_list() == [48, 48]
    assert seen["first_ts"].to_list() == [datetime(2024, 1, 1, tzinfo=UTC)] * 2


def test_rows_outside_the_partition_are_refused_before_anything_is_deleted(
    bigquery_emulator: Emulator,
) -> None:
    dataset = "warehouse_misdated"
    resources = {"io_manager": _io_manager(bigquery_emulator, dataset)}
    client = make_client(bigquery_emulator.project, api_endpoint=bigquery_emulator.endpoint)
    good = hourly_rows(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC), "good")

    @dg.asset(
        name="misdated_candles",
        partitions_def=misdated_candles.partitions_def,
        metadata={"partition_expr": "ts"},
    )
    def well_dated() -> pl.DataFrame:
        return good

    dg.materialize([well_dated], partition_key="2024-01-01", resources=resources)
    result = dg.materialize(
        [misdated_candles], partition_key="2024-01-01", resources=resources, raise_on_error=False
    )

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "outside the run's partitions" in str(failure.step_failure_data.error)
    stored = query_frame(client, f"SELECT * FROM `{dataset}.misdated_candles` ORDER BY ts, symbol")
    assert_frame_equal(stored, good)  # the earlier, valid write is untouched
