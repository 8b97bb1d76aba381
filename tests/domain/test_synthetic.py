"""The synthetic market: deterministic, in the candle contract, and with crypto's stylised facts."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire_domain.candles import (
    CANDLE_SCHEMA,
    duplicate_rows,
    gap_reports,
    inconsistent_range_rows,
    nan_rows,
    non_positive_price_rows,
    out_of_order_rows,
)
from sapphire_domain.errors import ConfigError
from sapphire_domain.synthetic import (
    DEFAULT_START,
    SyntheticMarketParams,
    bar_count,
    generate_candles,
    synthetic_symbols,
)
from sapphire_domain.timeframes import timeframe_ms


def log_returns(frame: pl.DataFrame) -> np.ndarray:
    """One row of 1-bar log returns per symbol."""
    wide = (
        frame.with_columns(pl.col("close").log().diff().over("symbol").alias("r"))
        .drop_nulls("r")
        .group_by("symbol", maintain_order=True)
        .agg("r")
    )
    return np.stack([np.asarray(r) for r in wide["r"]])


def autocorrelation(x: np.ndarray, lag: int) -> float:
    centred = x - x.mean()
    return float((centred[:-lag] * centred[lag:]).mean() / centred.var())


def assert_conforms(frame: pl.DataFrame, timeframe: str) -> None:
    assert frame.schema == CANDLE_SCHEMA
    for rule in (
        nan_rows,
        non_positive_price_rows,
        inconsistent_range_rows,
        duplicate_rows,
        out_of_order_rows,
    ):
        assert rule(frame).is_empty(), rule.__name__
    assert all(report.missing_bars == 0 for report in gap_reports(frame, timeframe))
    assert frame.equals(frame.sort("symbol", "ts"))


@pytest.fixture(scope="module")
def minute_market() -> pl.DataFrame:
    return generate_candles(n_symbols=4, days=20, timeframe="1m", seed=11)


# --- determinism and shape -----------------------------------------------------------------------


def test_the_same_seed_gives_the_same_market() -> None:
    assert generate_candles(3, 2, "5m", seed=42).equals(generate_candles(3, 2, "5m", seed=42))


def test_different_seeds_give_different_markets() -> None:
    first = generate_candles(3, 2, "5m", seed=1)
    second = generate_candles(3, 2, "5m", seed=2)
    assert first["ts"].equals(second["ts"])
    assert not first["close"].equals(second["close"])


def test_a_smaller_universe_is_a_prefix_of_a_larger_one() -> None:
    small = generate_candles(2, 1, "15m", seed=5)
    large = generate_candles(5, 1, "15m", seed=5)
    assert large.filter(pl.col("symbol").is_in(small["symbol"].unique().implode())).equals(small)


def test_a_market_conforms_to_the_candle_contract(minute_market: pl.DataFrame) -> None:
    assert_conforms(minute_market, "1m")
    assert minute_market["symbol"].unique().sort().to_list() == synthetic_symbols(4)
    assert len(minute_market) == 4 * 20 * 1440
    assert minute_market["ts"].min() == DEFAULT_START


def test_bars_are_continuous(minute_market: pl.DataFrame) -> None:
    previous_close = pl.col("close").shift(1).over("symbol")
    joined = minute_market.select(pl.col("open"), previous_close.alias("previous")).drop_nulls()
    assert (joined["open"] == joined["previous"]).all()


@settings(max_examples=30, deadline=None)
@given(
    n_symbols=st.integers(0, 4),
    days=st.integers(0, 3),
    timeframe=st.sampled_from(["1m", "3m", "7m", "15m", "1h", "4h", "1d", "1w"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_size_and_timeframe_gives_a_conforming_market(
    n_symbols: int, days: int, timeframe: str, seed: int
) -> None:
    start = datetime(2023, 6, 1, 12, tzinfo=UTC)
    frame = generate_candles(n_symbols, days, timeframe, seed=seed, start=start)
    assert_conforms(frame, timeframe)
    bars = -(-days * 86_400_000 // timeframe_ms(timeframe))
    assert len(frame) == n_symbols * bars == n_symbols * bar_count(days, timeframe)
    if len(frame):
        opens = frame["ts"].dt.epoch("ms").to_list()
        start_ms = int(start.timestamp() * 1000)
        assert min(opens) == start_ms
        assert max(opens) < start_ms + days * 86_400_000


def test_symbol_names_sort_in_index_order() -> None:
    assert synthetic_symbols(3) == ["SYN000/USD", "SYN001/USD", "SYN002/USD"]
    names = synthetic_symbols(1_200)
    assert names == sorted(names)
    assert len(set(names)) == 1_200


# --- stylised facts ------------------------------------------------------------------------------


def test_returns_have_fat_tails(minute_market: pl.DataFrame) -> None:
    for returns in log_returns(minute_market):
        centred = returns - returns.mean()
        excess_kurtosis = (centred**4).mean() / centred.var() ** 2 - 3
        assert excess_kurtosis > 1.0


def test_volatility_clusters_while_returns_stay_unpredictable(
    minute_market: pl.DataFrame,
) -> None:
    for returns in log_returns(minute_market):
        for lag in (1, 2, 5, 10):
            assert autocorrelation(np.abs(returns), lag) > 0.04
            assert abs(autocorrelation(returns, lag)) < 0.03


def test_without_garch_there_is_no_clustering() -> None:
    calm = SyntheticMarketParams(garch_alpha=0.0, garch_beta=0.0)
    frame = generate_candles(2, 20, "1m", seed=11, params=calm)
    for returns in log_returns(frame):
        assert abs(autocorrelation(np.abs(returns), 1)) < 0.02


@pytest.mark.parametrize("correlation", [0.0, 0.5, 0.8])
def test_symbols_are_correlated_at_the_configured_level(correlation: float) -> None:
    params = SyntheticMarketParams(market_correlation=correlation)
    returns = log_returns(generate_candles(5, 10, "1m", seed=3, params=params))
    matrix = np.corrcoef(returns)
    pairwise = matrix[~np.eye(len(matrix), dtype=bool)]
    assert abs(pairwise.mean() - correlation) < 0.06


def test_volatility_is_at_the_configured_level() -> None:
    params = SyntheticMarketParams(annual_volatility=0.6, volatility_dispersion=0.0)
    returns = log_returns(generate_candles(4, 30, "5m", seed=8, params=params))
    annualised = returns.std(axis=1) * np.sqrt(365 * 288)
    assert np.all(np.abs(annualised / 0.6 - 1) < 0.2)


def test_volume_rises_with_the_absolute_return(minute_market: pl.DataFrame) -> None:
    with_returns = minute_market.with_columns(
        pl.col("close").log().diff().over("symbol").abs().alias("abs_return")
    ).drop_nulls()
    for _, group in with_returns.group_by("symbol"):
        assert np.corrcoef(group["volume"], group["abs_return"])[0, 1] > 0.2


# --- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"garch_alpha": 0.2, "garch_beta": 0.8},
        {"student_t_dof": 2.0},
        {"market_correlation": 1.0},
        {"annual_volatility": 0.0},
        {"min_start_price": 10.0, "max_start_price": 1.0},
    ],
)
def test_impossible_parameters_are_a_config_error(overrides: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="invalid synthetic market parameters"):
        SyntheticMarketParams(**overrides)


def test_omega_targets_unit_unconditional_variance() -> None:
    params = SyntheticMarketParams(garch_alpha=0.1, garch_beta=0.85)
    assert params.garch_omega == pytest.approx(0.05)


def test_a_naive_start_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="time zone"):
        generate_candles(1, 1, start=datetime(2024, 1, 1))


def test_an_unknown_timeframe_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown timeframe"):
        generate_candles(1, 1, "1x")
