"""The look-ahead check passes the real features and catches features that peek at the future."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from sapphire_domain.candles import CANDLE_SCHEMA
from sapphire_domain.features import compute_features, warmup_bars
from sapphire_domain.lookahead import (
    LookaheadCheckError,
    find_lookahead,
    sample_times,
    violations_frame,
)

DATA = Path(__file__).resolve().parents[2] / "sapphire_market" / "data"


def _candles(pair: str, file: str) -> pl.DataFrame:
    frame = pl.read_parquet(DATA / file)
    return frame.with_columns(pl.lit(pair).alias("symbol")).select(list(CANDLE_SCHEMA))


@pytest.fixture(scope="module")
def candles() -> pl.DataFrame:
    # two months of two pairs, gaps included
    frames = [_candles(p, f"{p.replace('/', '_')}-30m.parquet") for p in ("BTC/USD", "ETH/USD")]
    start, end = datetime(2018, 1, 1, tzinfo=UTC), datetime(2018, 3, 1, tzinfo=UTC)
    return pl.concat(frames).filter(pl.col("ts").is_between(start, end)).sort("symbol", "ts")


def features_30m(frame: pl.DataFrame) -> pl.DataFrame:
    return compute_features(frame, "30m")


def test_the_real_features_use_no_future_data(candles):
    times = sample_times(candles, 12, seed=7, skip=warmup_bars())
    violations = find_lookahead(features_30m, candles, "30m", times, history_bars=warmup_bars())
    assert violations == []


def test_truncating_below_the_warmup_would_be_reported(candles):
    # the check is sharp: too little history changes the recursive indicators, and it says so
    times = sample_times(candles, 3, seed=1, skip=warmup_bars())
    violations = find_lookahead(features_30m, candles, "30m", times, history_bars=30)
    assert {v.column for v in violations} >= {"rsi", "macd", "natr"}


def test_a_feature_that_reads_the_next_close_is_caught(candles):
    def leaky(frame: pl.DataFrame) -> pl.DataFrame:
        return compute_features(frame, "30m").with_columns(
            (pl.col("ret_1").shift(-1).over("symbol")).alias("next_return")
        )

    times = sample_times(candles, 5, seed=2, skip=warmup_bars())
    violations = find_lookahead(leaky, candles, "30m", times, history_bars=warmup_bars())
    assert {v.column for v in violations} == {"next_return"}
    assert len(violations) == 5 * 2  # every sampled time, both symbols
    assert all(v.truncated_value is None and v.full_value is not None for v in violations)


def test_a_centred_rolling_mean_is_caught_and_named(candles):
    def centred(frame: pl.DataFrame) -> pl.DataFrame:
        smooth = pl.col("close").rolling_mean(9, center=True).over("symbol")
        return frame.select("ts", "symbol", (smooth / pl.col("close")).alias("smooth_close"))

    times = sample_times(candles, 4, seed=3, skip=10)
    table = violations_frame(find_lookahead(centred, candles, "30m", times))
    assert table["column"].unique().to_list() == ["smooth_close"]
    assert set(table["symbol"]) == {"BTC/USD", "ETH/USD"}
    assert table["ts"].dtype == pl.Datetime("ms", "UTC")


def _perp() -> tuple[pl.DataFrame, pl.DataFrame]:
    candles = _candles("XRP/USDT:USDT", "XRP_USDT-PERP-5m.parquet")
    funding = pl.read_parquet(DATA / "XRP_USDT-PERP-8h-funding.parquet").select(
        "ts", pl.lit("XRP/USDT:USDT").alias("symbol"), pl.col("open").alias("rate")
    )
    return candles, funding


def test_funding_known_only_at_the_close_passes_and_the_next_print_is_caught():
    candles, funding = _perp()
    # candles whose close falls just before or exactly on a print, where a leak would show
    times = [
        datetime(2021, 11, 20, 23, 55, tzinfo=UTC),
        datetime(2021, 11, 21, 7, 55, tzinfo=UTC),
        datetime(2021, 11, 21, 15, 50, tzinfo=UTC),
    ]

    def honest(frame, funding):
        return compute_features(frame, "5m", funding=funding)

    assert find_lookahead(honest, candles, "5m", times, funding=funding) == []

    def next_print(frame, funding):
        later = funding.with_columns(pl.col("ts").dt.offset_by("-1h"))  # as if printed earlier
        return compute_features(frame, "5m", funding=later)

    violations = find_lookahead(next_print, candles, "5m", times, funding=funding)
    assert {v.column for v in violations} == {"funding_rate"}


def test_an_empty_sample_is_refused(candles):
    with pytest.raises(LookaheadCheckError):
        find_lookahead(features_30m, candles, "30m", [])
