"""The candle rules name exactly the rows that break them."""

import itertools
from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire_domain import candles as c
from sapphire_domain.errors import CandleSchemaError

T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
STEP = 30 * 60_000


def frame(rows: list[tuple[int, str, float, float, float, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["ts", "symbol", "open", "high", "low", "close", "volume"], orient="row"
    ).with_columns(pl.col("ts").cast(c.TS_TYPE))


def good(
    n: int = 5, symbol: str = "BTC/USD"
) -> list[tuple[int, str, float, float, float, float, float]]:
    return [(T0 + i * STEP, symbol, 100.0, 101.0, 99.0, 100.5, 10.0) for i in range(n)]


def test_clean_candles_break_no_rule():
    candles = frame(good())
    assert c.schema_problems(candles) == []
    for rule in (
        c.nan_rows,
        c.non_positive_price_rows,
        c.inconsistent_range_rows,
        c.duplicate_rows,
        c.out_of_order_rows,
    ):
        assert rule(candles).is_empty(), rule.__name__


def test_nan_and_missing_values_are_named():
    rows = good()
    rows[1] = (rows[1][0], "BTC/USD", float("nan"), 101.0, 99.0, 100.0, 1.0)
    candles = frame(rows).with_columns(
        pl.when(pl.col("ts") == pl.col("ts").max())
        .then(None)
        .otherwise(pl.col("volume"))
        .alias("volume")
    )
    bad = c.nan_rows(candles)
    assert bad.height == 2


def test_non_positive_prices_and_negative_volume_are_named():
    rows = good()
    rows[0] = (rows[0][0], "BTC/USD", 0.0, 101.0, 99.0, 100.0, 1.0)
    rows[2] = (rows[2][0], "BTC/USD", 100.0, 101.0, 99.0, 100.0, -1.0)
    assert (
        c.non_positive_price_rows(frame(rows))["ts"].to_list()
        == frame(rows)["ts"].gather([0, 2]).to_list()
    )


def test_high_below_low_and_close_outside_the_range_are_named():
    rows = good()
    rows[1] = (rows[1][0], "BTC/USD", 100.0, 98.0, 99.0, 98.5, 1.0)  # high below low
    rows[3] = (rows[3][0], "BTC/USD", 100.0, 101.0, 99.0, 102.0, 1.0)  # close above high
    assert c.inconsistent_range_rows(frame(rows)).height == 2


def test_duplicates_name_every_copy():
    rows = good()
    rows.append(rows[2])
    assert c.duplicate_rows(frame(rows)).height == 2


def test_out_of_order_rows_are_found_per_symbol():
    rows = good() + good(symbol="ETH/USD")
    rows[1], rows[2] = rows[2], rows[1]
    bad = c.out_of_order_rows(frame(rows))
    assert bad["symbol"].to_list() == ["BTC/USD"]


def test_gaps_are_counted_with_their_longest_run():
    rows = good(20)
    del rows[3]  # one missing
    del rows[9:12]  # three missing
    (report,) = c.gap_reports(frame(rows), "30m")
    assert (report.count, report.missing_bars, report.longest_bars) == (2, 4, 3)


def test_schema_problems_name_missing_and_mistyped_columns():
    candles = frame(good()).drop("volume").with_columns(pl.col("open").cast(pl.Int64))
    problems = c.schema_problems(candles)
    assert any("volume" in p for p in problems) and any("'open'" in p for p in problems)
    with pytest.raises(CandleSchemaError, match="volume"):
        c.require_candle_schema(candles, "test")


def test_only_closed_candles_are_visible():
    candles = frame(good(4))
    now = T0 + 2 * STEP  # the second candle closes exactly now, the third is still open
    assert c.closed_before(candles, "30m", now).height == 2


@given(st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=60, unique=True))
def test_gap_report_matches_a_direct_count(indexes):
    indexes = sorted(indexes)
    rows = [(T0 + i * STEP, "X/USD", 1.0, 1.0, 1.0, 1.0, 0.0) for i in indexes]
    (report,) = c.gap_reports(frame(rows), "30m")
    gaps = [b - a - 1 for a, b in itertools.pairwise(indexes) if b - a > 1]
    assert report.count == len(gaps)
    assert report.missing_bars == sum(gaps)
    assert report.longest_bars == max(gaps, default=0)


def test_ohlcv_rows_become_candle_frames():
    candles = c.from_ohlcv_rows("BTC/USD", [[T0, 1.0, 2.0, 0.5, 1.5, 3.0]])
    assert c.schema_problems(candles) == []
    assert candles.row(0, named=True)["symbol"] == "BTC/USD"
