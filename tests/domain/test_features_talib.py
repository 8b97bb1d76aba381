"""The indicators agree with TA-Lib, row for row, on real BTC/USD and ETH/USD 30-minute candles.

TA-Lib runs on each symbol's rows as one gapless array, as the features do (windows count bars).
Price-denominated outputs are divided by the close in the features, so they are scaled back here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import talib

from sapphire_domain.candles import CANDLE_SCHEMA
from sapphire_domain.features import FeatureParams, compute_features

DATA = Path(__file__).resolve().parents[2] / "sapphire_market" / "data"
PARAMS = FeatureParams()
# TA-Lib's longest lookback here is MACD's, slow + signal - 2 = 33 bars; compare after it.
FIRST_COMPARED = PARAMS.macd_slow + PARAMS.macd_signal - 2


def _candles(pair: str) -> pl.DataFrame:
    frame = pl.read_parquet(DATA / f"{pair.replace('/', '_')}-30m.parquet")
    return frame.with_columns(pl.lit(pair).alias("symbol")).select(list(CANDLE_SCHEMA))


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    candles = pl.concat([_candles("BTC/USD"), _candles("ETH/USD")])
    features = compute_features(candles, "30m", PARAMS)
    return {
        pair: (
            candles.filter(pl.col("symbol") == pair),
            features.filter(pl.col("symbol") == pair),
        )
        for pair in ("BTC/USD", "ETH/USD")
    }


def _assert_close(ours: np.ndarray, theirs: np.ndarray, rtol: float = 1e-9) -> None:
    ours, theirs = ours[FIRST_COMPARED:], theirs[FIRST_COMPARED:]
    assert not np.isnan(theirs).any()
    defined = ~np.isnan(ours)
    assert defined.mean() > 0.999  # only degenerate rows (flat windows) may be undefined
    np.testing.assert_allclose(ours[defined], theirs[defined], rtol=rtol, atol=1e-9)


@pytest.mark.parametrize("pair", ["BTC/USD", "ETH/USD"])
def test_rsi_matches_talib_wilder_rsi(pairs, pair):
    candles, features = pairs[pair]
    expected = talib.RSI(candles["close"].to_numpy(), PARAMS.rsi_period)
    _assert_close(features["rsi"].to_numpy(), expected)


@pytest.mark.parametrize("pair", ["BTC/USD", "ETH/USD"])
def test_macd_line_signal_and_histogram_match_talib(pairs, pair):
    candles, features = pairs[pair]
    close = candles["close"].to_numpy()
    line, signal, hist = talib.MACD(close, PARAMS.macd_fast, PARAMS.macd_slow, PARAMS.macd_signal)
    # MACD is a difference of EMAs in price units; compare in units of the close, where the
    # agreement is at rounding level.
    _assert_close(features["macd"].to_numpy(), line / close)
    _assert_close(features["macd_signal"].to_numpy(), signal / close)
    _assert_close(features["macd_hist"].to_numpy(), hist / close, rtol=1e-6)


@pytest.mark.parametrize("pair", ["BTC/USD", "ETH/USD"])
def test_normalised_atr_matches_talib_atr_over_close(pairs, pair):
    candles, features = pairs[pair]
    high, low, close = (candles[c].to_numpy() for c in ("high", "low", "close"))
    expected = talib.ATR(high, low, close, PARAMS.atr_period) / close
    _assert_close(features["natr"].to_numpy(), expected)


@pytest.mark.parametrize("pair", ["BTC/USD", "ETH/USD"])
def test_bollinger_z_uses_talib_bbands_middle_and_population_std(pairs, pair):
    candles, features = pairs[pair]
    close = candles["close"].to_numpy()
    upper, middle, _ = talib.BBANDS(close, PARAMS.bollinger_window, 2.0, 2.0)
    std = (upper - middle) / 2.0
    # Both sides use running sums, so compare the z-score where the band is not degenerate.
    wide = std > 1e-6 * middle
    ours = features["bb_z"].to_numpy()
    assert np.isnan(ours[FIRST_COMPARED:][~wide[FIRST_COMPARED:]]).all()
    np.testing.assert_allclose(
        ours[FIRST_COMPARED:][wide[FIRST_COMPARED:]],
        ((close - middle) / std)[FIRST_COMPARED:][wide[FIRST_COMPARED:]],
        rtol=1e-6,
        atol=1e-8,
    )
