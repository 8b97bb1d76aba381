"""Feature maths on the bundled real data: partitions, symbols, trades, funding, gaps, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sapphire_domain.candles import CANDLE_SCHEMA, gap_reports
from sapphire_domain.errors import CandleSchemaError, ConfigError
from sapphire_domain.features import (
    FeatureInputError,
    FeatureParams,
    compute_features,
    feature_columns,
    warmup_bars,
)

DATA = Path(__file__).resolve().parents[2] / "sapphire_market" / "data"
USD_PAIRS = ("BTC/USD", "ETH/USD", "XRP/USD", "EOS/USD")


def _candles(pair: str, file: str) -> pl.DataFrame:
    frame = pl.read_parquet(DATA / file)
    return frame.with_columns(pl.lit(pair).alias("symbol")).select(list(CANDLE_SCHEMA))


@pytest.fixture(scope="module")
def usd_candles() -> pl.DataFrame:
    frames = [_candles(p, f"{p.replace('/', '_')}-30m.parquet") for p in sorted(USD_PAIRS)]
    return pl.concat(frames).sort("symbol", "ts")


@pytest.fixture(scope="module")
def usd_features(usd_candles) -> pl.DataFrame:
    return compute_features(usd_candles, "30m")


def _assert_frames_agree(left: pl.DataFrame, right: pl.DataFrame, tolerance: float = 1e-9):
    assert left.select("symbol", "ts").equals(right.select("symbol", "ts"))
    for column in feature_columns():
        a = left[column].cast(pl.Float64).to_numpy()
        b = right[column].cast(pl.Float64).to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), column
        scale = np.maximum(1.0, np.abs(a))
        assert np.nanmax(np.abs(a - b) / scale, initial=0.0) <= tolerance, column


def test_output_has_one_row_per_candle_with_the_documented_columns(usd_candles, usd_features):
    assert usd_features.columns == ["ts", "symbol", *feature_columns()]
    assert usd_features.select("symbol", "ts").equals(usd_candles.select("symbol", "ts"))
    assert feature_columns()[:4] == ["ret_1", "ret_4", "ret_16", "ret_48"]


@pytest.mark.parametrize(
    "day", [datetime(2018, 2, 6, tzinfo=UTC), datetime(2019, 7, 1, tzinfo=UTC)]
)
def test_a_partition_with_warmup_history_equals_the_full_history_rows(
    usd_candles, usd_features, day
):
    warmup = warmup_bars()
    slices = []
    for pair in USD_PAIRS:
        rows = usd_candles.filter(pl.col("symbol") == pair)
        first = rows["ts"].search_sorted(day)
        slices.append(rows.slice(first - warmup))
    partition = compute_features(pl.concat(slices), "30m").filter(pl.col("ts") >= day)
    full = usd_features.filter(pl.col("ts") >= day)
    _assert_frames_agree(full, partition)


def test_warmup_covers_seed_decay_of_the_slowest_recursive_indicator():
    params = FeatureParams()
    # (1 - 1/14)^n < 1e-12 needs n >= 373 Wilder steps after the RSI's 14-bar seed
    assert warmup_bars(params) >= 14 + 373
    assert warmup_bars(FeatureParams(rsi_period=28)) > warmup_bars(params)


def test_too_short_a_history_does_not_reproduce_the_recursive_indicators(usd_candles, usd_features):
    day = datetime(2018, 2, 6, tzinfo=UTC)
    rows = usd_candles.filter(pl.col("symbol") == "BTC/USD")
    short = rows.slice(rows["ts"].search_sorted(day) - 40)
    partition = compute_features(short, "30m").filter(pl.col("ts") == day)
    full = usd_features.filter((pl.col("ts") == day) & (pl.col("symbol") == "BTC/USD"))
    assert partition["rsi"][0] != pytest.approx(full["rsi"][0], rel=1e-9)
    assert partition["ret_4"][0] == pytest.approx(full["ret_4"][0], rel=1e-12)


def test_all_symbols_at_once_equal_each_symbol_alone(usd_candles, usd_features):
    alone = pl.concat(
        [
            compute_features(usd_candles.filter(pl.col("symbol") == p), "30m")
            for p in sorted(USD_PAIRS)
        ]
    )
    # equal up to rounding: a rolling sum may start its running total at a different row
    _assert_frames_agree(usd_features, alone, tolerance=1e-12)


def test_unsorted_candles_give_the_same_features_in_contract_order(usd_candles, usd_features):
    shuffled = usd_candles.sample(fraction=1.0, shuffle=True, seed=3)
    _assert_frames_agree(usd_features, compute_features(shuffled, "30m"), tolerance=0.0)


def test_gaps_are_flagged_and_never_filled(usd_candles, usd_features):
    btc = usd_candles.filter(pl.col("symbol") == "BTC/USD")
    features = usd_features.filter(pl.col("symbol") == "BTC/USD")
    report = gap_reports(btc, "30m")[0]
    assert report.count > 0
    assert features.height == btc.height  # no rows invented for missing candles
    assert features["gap_before"].sum() == report.count
    assert features["gap_before"][0] is None
    after_gap = features.with_row_index().filter(pl.col("gap_before"))
    assert (after_gap["bars_since_gap"] == 0).all()
    # a return across a gap spans it: it is the log change from the last candle that exists
    i = int(after_gap["index"][0])
    expected = np.log(btc["close"][i] / btc["close"][i - 1])
    assert features["ret_1"][i] == pytest.approx(expected, rel=1e-12)
    assert features["bars_since_gap"].max() == warmup_bars()


def test_values_are_within_their_natural_ranges(usd_features):
    rows = usd_features.slice(warmup_bars())
    assert rows["rsi"].drop_nulls().is_between(0.0, 100.0).all()
    assert (rows["natr"] > 0).all()
    assert (rows["realized_vol"] > 0).all()
    assert (rows["cs_spread"] >= 0).all()
    assert 0.0 < rows["cs_spread"].median() < 0.01  # a few basis points on liquid pairs
    assert rows["trade_imbalance"].is_null().all()
    assert rows["funding_rate"].is_null().all()


def _xrp_eth_trades() -> pl.DataFrame:
    return (
        pl.read_parquet(DATA / "XRP_ETH-trades.parquet")
        .with_columns(
            pl.col("ts").cast(pl.Datetime("ms", "UTC")), pl.lit("XRP/ETH").alias("symbol")
        )
        .select("ts", "symbol", "side", "price", "amount")
    )


def _candles_from_trades(trades: pl.DataFrame, every: str) -> pl.DataFrame:
    return (
        trades.sort("ts")
        .group_by_dynamic("ts", every=every, group_by="symbol")
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("amount").sum().alias("volume"),
        )
        .select(list(CANDLE_SCHEMA))
    )


def test_trade_imbalance_is_signed_share_of_the_candles_own_trades():
    trades = _xrp_eth_trades()
    candles = _candles_from_trades(trades, "5m")
    other = _candles("XRP/USD", "XRP_USD-30m.parquet").tail(600)
    other = other.with_columns(pl.col("ts").dt.offset_by("2y"))  # another symbol, without trades
    features = compute_features(pl.concat([candles, other]), "5m", trades=trades)

    imbalance = features.filter(pl.col("symbol") == "XRP/ETH")["trade_imbalance"]
    assert imbalance.null_count() == 0  # every candle here was built from its trades
    assert imbalance.is_between(-1.0, 1.0).all()
    assert imbalance.std() > 0.1
    assert features.filter(pl.col("symbol") == "XRP/USD")["trade_imbalance"].is_null().all()

    start = candles["ts"][10]
    inside = trades.filter((pl.col("ts") >= start) & (pl.col("ts") < start + timedelta(minutes=5)))
    buys = inside.filter(pl.col("side") == "buy")["amount"].sum()
    sells = inside.filter(pl.col("side") == "sell")["amount"].sum()
    row = features.filter((pl.col("symbol") == "XRP/ETH") & (pl.col("ts") == start))
    assert row["trade_imbalance"][0] == pytest.approx((buys - sells) / (buys + sells), rel=1e-12)


def test_trades_in_a_missing_candle_count_nowhere():
    trades = _xrp_eth_trades()
    candles = _candles_from_trades(trades, "5m")
    missing = candles["ts"][20]
    with_gap = compute_features(candles.filter(pl.col("ts") != missing), "5m", trades=trades)
    full = compute_features(candles, "5m", trades=trades)
    before = full.filter(pl.col("ts") == candles["ts"][19])["trade_imbalance"][0]
    assert with_gap.filter(pl.col("ts") == candles["ts"][19])["trade_imbalance"][0] == before
    assert with_gap.height == candles.height - 1


def _perp() -> tuple[pl.DataFrame, pl.DataFrame]:
    candles = _candles("XRP/USDT:USDT", "XRP_USDT-PERP-5m.parquet")
    funding = pl.read_parquet(DATA / "XRP_USDT-PERP-8h-funding.parquet").select(
        "ts", pl.lit("XRP/USDT:USDT").alias("symbol"), pl.col("open").alias("rate")
    )
    return candles, funding


def _rate_at(features: pl.DataFrame, ts: str) -> float | None:
    when = datetime.fromisoformat(ts).replace(tzinfo=UTC)
    return features.filter(pl.col("ts") == when)["funding_rate"][0]


def _print(funding: pl.DataFrame, ts: str) -> float:
    when = datetime.fromisoformat(ts).replace(tzinfo=UTC)
    return funding.filter(pl.col("ts") == when)["rate"][0]


def test_funding_is_the_last_print_at_or_before_the_candle_close():
    candles, funding = _perp()
    features = compute_features(candles, "5m", funding=funding)
    # no print yet: the first is stamped 2021-11-18 00:00:00.017, after this candle's close
    assert _rate_at(features, "2021-11-17T23:55:00") is None
    assert _rate_at(features, "2021-11-18T00:00:00") == _print(funding, "2021-11-18T00:00:00.017")
    # a print stamped exactly at the close (2021-11-21 00:00:00.000) is known at that close
    midnight = _print(funding, "2021-11-21T00:00:00")
    earlier = _print(funding, "2021-11-20T16:00:00.007")
    assert midnight != earlier
    assert _rate_at(features, "2021-11-20T23:50:00") == earlier
    assert _rate_at(features, "2021-11-20T23:55:00") == midnight
    # the next print is stamped 6 ms after the 07:55 candle's close: not usable by that candle
    next_print = _print(funding, "2021-11-21T08:00:00.006")
    assert next_print != midnight
    assert _rate_at(features, "2021-11-21T07:55:00") == midnight
    assert _rate_at(features, "2021-11-21T08:00:00") == next_print


def test_funding_older_than_its_max_age_is_not_used():
    candles, funding = _perp()
    stale = funding.filter(pl.col("ts") < datetime(2021, 11, 19, tzinfo=UTC))
    features = compute_features(
        candles, "5m", FeatureParams(funding_max_age=timedelta(hours=9)), funding=stale
    )
    assert _rate_at(features, "2021-11-19T00:30:00") == 0.0001
    assert _rate_at(features, "2021-11-20T12:00:00") is None


def test_a_frame_that_is_not_a_candle_frame_is_rejected(usd_candles):
    with pytest.raises(CandleSchemaError, match="volume"):
        compute_features(usd_candles.drop("volume"), "30m")
    with pytest.raises(CandleSchemaError, match="close"):
        compute_features(usd_candles.with_columns(pl.col("close").cast(pl.Float32)), "30m")


def test_duplicate_candles_and_bad_prices_are_named(usd_candles):
    btc = usd_candles.filter(pl.col("symbol") == "BTC/USD").head(200)
    with pytest.raises(FeatureInputError, match="1 duplicate"):
        compute_features(pl.concat([btc, btc.slice(5, 1)]), "30m")
    bad = btc.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(-1.0).otherwise(pl.col("low")).alias("low")
    )
    with pytest.raises(FeatureInputError, match="non-positive price"):
        compute_features(bad, "30m")
    nan = btc.with_columns(
        pl.when(pl.int_range(pl.len()) == 9)
        .then(float("nan"))
        .otherwise(pl.col("volume"))
        .alias("volume")
    )
    with pytest.raises(FeatureInputError, match="volume"):
        compute_features(nan, "30m")
    with pytest.raises(ConfigError):
        compute_features(btc, "30 minutes")


def test_malformed_trades_and_funding_are_rejected(usd_candles):
    btc = usd_candles.filter(pl.col("symbol") == "BTC/USD").head(50)
    raw_trades = pl.read_parquet(DATA / "XRP_ETH-trades.parquet")  # microseconds, no symbol
    with pytest.raises(FeatureInputError, match="trades"):
        compute_features(btc, "30m", trades=raw_trades)
    raw_funding = pl.read_parquet(DATA / "XRP_USDT-PERP-8h-funding.parquet")
    with pytest.raises(FeatureInputError, match="funding"):
        compute_features(btc, "30m", funding=raw_funding)


def test_invalid_parameters_are_rejected():
    with pytest.raises(FeatureInputError, match="macd_fast"):
        FeatureParams(macd_fast=30, macd_slow=26)
    with pytest.raises(FeatureInputError, match="horizon"):
        FeatureParams(return_horizons=(0, 4))
