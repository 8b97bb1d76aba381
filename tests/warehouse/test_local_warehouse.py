"""The local warehouse through real Dagster runs: layout, idempotence, ranges, look-back, SQL."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from resources.warehouse import LocalWarehouseIOManager
from sapphire_warehouse.sql import connect, write_views_sql
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


def _resources(root: Path) -> dict[str, object]:
    return {"io_manager": LocalWarehouseIOManager(root=str(root))}


def _files(root: Path, table: str) -> list[str]:
    return sorted(p.name for p in (root / table).iterdir())


def test_a_partition_run_writes_one_file_with_that_days_rows(tmp_path: Path) -> None:
    result = dg.materialize([candles], partition_key="2024-01-02", resources=_resources(tmp_path))

    assert _files(tmp_path, "candles") == ["2024-01-02.parquet"]
    frame = pl.read_parquet(tmp_path / "candles" / "2024-01-02.parquet")
    assert frame.height == ROWS_PER_DAY
    assert frame["ts"].min() == datetime(2024, 1, 2, tzinfo=UTC)
    assert frame["ts"].max() == datetime(2024, 1, 2, 23, tzinfo=UTC)
    metadata = result.asset_materializations_for_node("candles")[0].metadata
    assert metadata["dagster/row_count"].value == ROWS_PER_DAY
    assert metadata["partition_row_counts"].value == {"2024-01-02": ROWS_PER_DAY}


def test_rematerialising_a_partition_replaces_it_without_duplicates(tmp_path: Path) -> None:
    dg.materialize([candles], partition_key="2024-01-02", resources=_resources(tmp_path))
    second = dg.materialize([candles], partition_key="2024-01-02", resources=_resources(tmp_path))

    frame = pl.read_parquet(tmp_path / "candles" / "2024-01-02.parquet")
    assert frame.height == ROWS_PER_DAY
    assert frame["run_id"].unique().to_list() == [second.run_id]
    assert _files(tmp_path, "candles") == ["2024-01-02.parquet"]  # no temporary left behind


def test_a_single_run_over_a_range_writes_one_file_per_partition(tmp_path: Path) -> None:
    result = dg.materialize(
        [candles],
        tags={RANGE_START: "2024-01-03", RANGE_END: "2024-01-05"},
        resources=_resources(tmp_path),
    )

    assert _files(tmp_path, "candles") == [
        "2024-01-03.parquet",
        "2024-01-04.parquet",
        "2024-01-05.parquet",
    ]
    for day in ("03", "04", "05"):
        frame = pl.read_parquet(tmp_path / "candles" / f"2024-01-{day}.parquet")
        assert frame.height == ROWS_PER_DAY
        assert frame["ts"].dt.day().unique().to_list() == [int(day)]
        assert frame["run_id"].unique().to_list() == [result.run_id]


def test_a_partition_without_rows_still_gets_an_empty_file_with_the_schema(tmp_path: Path) -> None:
    @dg.asset(
        name="candles",
        partitions_def=candles.partitions_def,
        metadata={"partition_expr": "ts"},
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def first_day_only(context: dg.AssetExecutionContext) -> pl.DataFrame:
        window = context.partition_time_window
        frame = hourly_rows(window.start, window.end, context.run.run_id)
        return frame.filter(pl.col("ts") < datetime(2024, 1, 2, tzinfo=UTC))

    dg.materialize(
        [first_day_only],
        tags={RANGE_START: "2024-01-01", RANGE_END: "2024-01-02"},
        resources=_resources(tmp_path),
    )

    empty = pl.read_parquet(tmp_path / "candles" / "2024-01-02.parquet")
    assert empty.height == 0
    assert empty.columns == ["ts", "symbol", "close", "run_id"]


def test_rows_outside_the_runs_partitions_fail_the_run_and_write_nothing(tmp_path: Path) -> None:
    result = dg.materialize(
        [misdated_candles],
        tags={RANGE_START: "2024-01-01", RANGE_END: "2024-01-02"},
        resources=_resources(tmp_path),
        raise_on_error=False,
    )

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "misdated_candles" in message
    assert "'ts'" in message
    assert "2024-01-03 00:00:00+00:00" in message  # the offending time
    assert not (tmp_path / "misdated_candles").exists()  # not even the valid first day


def test_a_look_back_loads_the_existing_upstream_days_and_skips_missing_ones(
    tmp_path: Path,
) -> None:
    resources = _resources(tmp_path)
    dg.materialize([candles], partition_key="2024-01-01", resources=resources)
    dg.materialize([candles], partition_key="2024-01-03", resources=resources)  # 01-02 missing

    both = [candles, candles_lookback]
    for key in ("2024-01-01", "2024-01-03"):
        dg.materialize(both, selection=[candles_lookback], partition_key=key, resources=resources)

    # 2024-01-01 looks back to days before the partitions start; 2024-01-03 finds no 01-02.
    first = pl.read_parquet(tmp_path / "candles_lookback" / "2024-01-01.parquet")
    assert first["rows_seen"].to_list() == [24, 24]
    third = pl.read_parquet(tmp_path / "candles_lookback" / "2024-01-03.parquet")
    assert third["rows_seen"].to_list() == [48, 48]
    assert third["first_ts"].to_list() == [datetime(2024, 1, 1, tzinfo=UTC)] * 2
    assert third["last_ts"].to_list() == [datetime(2024, 1, 3, 23, tzinfo=UTC)] * 2


def test_a_look_back_over_only_missing_days_loads_an_empty_frame_with_the_schema(
    tmp_path: Path,
) -> None:
    resources = _resources(tmp_path)
    dg.materialize([candles], partition_key="2024-01-01", resources=resources)
    dg.materialize(
        [candles, candles_lookback],
        selection=[candles_lookback],
        partition_key="2024-01-10",
        resources=resources,
    )

    assert pl.read_parquet(tmp_path / "candles_lookback" / "2024-01-10.parquet").height == 0


def test_loading_an_asset_that_was_never_materialised_names_it(tmp_path: Path) -> None:
    result = dg.materialize(
        [candles, candles_lookback],
        selection=[candles_lookback],
        partition_key="2024-01-10",
        resources=_resources(tmp_path),
        raise_on_error=False,
    )

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "candles has never been materialised" in str(failure.step_failure_data.error)


def test_an_unpartitioned_downstream_loads_every_written_partition(tmp_path: Path) -> None:
    resources = _resources(tmp_path)
    dg.materialize(
        [candles], tags={RANGE_START: "2024-01-01", RANGE_END: "2024-01-02"}, resources=resources
    )
    dg.materialize([candles], partition_key="2024-01-20", resources=resources)
    dg.materialize([candles, candles_snapshot], selection=[candles_snapshot], resources=resources)

    snapshot = pl.read_parquet(tmp_path / "candles_snapshot" / "data.parquet")
    assert snapshot.height == 3 * ROWS_PER_DAY
    assert snapshot["ts"].dt.date().unique().sort().cast(pl.String).to_list() == [
        "2024-01-01",
        "2024-01-02",
        "2024-01-20",
    ]


def test_sql_views_see_every_table_and_its_rows(tmp_path: Path) -> None:
    resources = _resources(tmp_path)
    dg.materialize(
        [candles], tags={RANGE_START: "2024-01-01", RANGE_END: "2024-01-03"}, resources=resources
    )
    dg.materialize([candles, candles_snapshot], selection=[candles_snapshot], resources=resources)
    (tmp_path / "candles" / ".tmp-abc.partial").write_bytes(b"half a file")  # a write under way

    con = connect(tmp_path)
    days = con.execute(
        "SELECT CAST(ts AS DATE)::VARCHAR AS day, count(*) AS n "
        "FROM candles GROUP BY day ORDER BY day"
    ).fetchall()
    assert days == [(f"2024-01-0{d}", ROWS_PER_DAY) for d in (1, 2, 3)]
    assert con.execute("SELECT count(*) FROM candles_snapshot").fetchone() == (3 * ROWS_PER_DAY,)

    views_sql = write_views_sql(tmp_path)
    cli = duckdb.connect()
    cli.execute(views_sql.read_text())
    assert cli.execute("SELECT count(DISTINCT symbol) FROM candles").fetchone() == (2,)


def test_sql_views_name_nested_asset_keys_with_double_underscores(tmp_path: Path) -> None:
    @dg.asset(key=["market", "ticks"])
    def ticks() -> pl.DataFrame:
        return pl.DataFrame({"symbol": ["BTC/USDT"], "price": [1.5]})

    dg.materialize([ticks], resources=_resources(tmp_path))

    assert (tmp_path / "market" / "ticks" / "data.parquet").exists()
    assert connect(tmp_path).execute("SELECT price FROM market__ticks").fetchone() == (1.5,)


def test_a_partitioned_asset_without_partition_expr_is_refused(tmp_path: Path) -> None:
    @dg.asset(name="candles", partitions_def=candles.partitions_def)
    def undeclared(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.DataFrame({"ts": [datetime(2024, 1, 1, tzinfo=UTC)]})

    result = dg.materialize(
        [undeclared],
        partition_key="2024-01-01",
        resources=_resources(tmp_path),
        raise_on_error=False,
    )

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "partition_expr" in str(failure.step_failure_data.error)
    assert not (tmp_path / "candles").exists()
