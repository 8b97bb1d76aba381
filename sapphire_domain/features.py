"""Feature maths: one row of model inputs per candle, for every symbol at once.

Timing. A row at ``ts`` describes the candle that opens at ``ts`` and closes at ``ts + timeframe``.
Its features use data known at that close and nothing later: the candle itself and the ones before
it, the trades inside ``[ts, ts + timeframe)`` and funding prints stamped at or before the close.

Gaps. Missing candles are never filled. Every window counts *rows* (bars that exist), not clock
time, so ``ret_4`` after a gap spans more than four timeframes. Rather than invent values, the
frame says where gaps are: ``gap_before`` marks the first bar after a gap and ``bars_since_gap``
counts the bars of the current unbroken run, so downstream code can drop or down-weight rows whose
windows span a gap. The first candle of a symbol has ``gap_before`` null: nothing is known
before it.

Conventions follow TA-Lib where it defines the indicator, so results can be checked against it:
RSI and ATR use Wilder smoothing seeded with a simple mean of the first ``period`` values, MACD's
EMAs are seeded with a simple mean (the fast one over the window that ends where the slow one's
seed ends, as TA-Lib does), and Bollinger bands use the population standard deviation.
Price-denominated indicators (MACD, ATR) are divided by the close so that symbols are comparable.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from sapphire_domain.candles import TS_TYPE, require_candle_schema
from sapphire_domain.errors import SapphireError
from sapphire_domain.timeframes import timeframe_ms

# The seed of a recursive smoother must have decayed below this fraction of its size; it leaves
# three orders of magnitude under the 1e-9 tolerance at which partitions must agree.
SEED_RESIDUAL = 1e-12

# Corwin-Schultz constant 3 - 2*sqrt(2).
_CS_K = 3.0 - 2.0 * math.sqrt(2.0)


class FeatureInputError(SapphireError):
    """Candles, trades or funding handed to the feature maths break their contract."""


@dataclass(frozen=True)
class FeatureParams:
    """Windows of the features, counted in bars. The defaults suit 30-minute bars.

    Attributes:
        return_horizons: bars over which log returns ``ret_<h>`` are taken; (1, 4, 16, 48) is
            30 minutes, 2 hours, 8 hours and a day on 30-minute bars. Must include 1 only if
            ``ret_1`` is wanted as a column; realised volatility always uses 1-bar returns.
        volatility_window: bars in the rolling standard deviation (ddof 1) of 1-bar log returns.
        rsi_period: Wilder period of the RSI.
        macd_fast, macd_slow, macd_signal: EMA periods of the MACD line and its signal line.
        bollinger_window: bars of the moving mean and population std behind ``bb_z``.
        atr_period: Wilder period of the average true range.
        volume_window: bars of the rolling mean and std behind ``volume_z``.
        spread_window: two-bar Corwin-Schultz estimates averaged into ``cs_spread``.
        funding_max_age: a funding rate older than this at the candle's close is not used
            (the column is null): a perpetual's funding is paid every few hours, so an older
            print means the feed stopped.
    """

    return_horizons: tuple[int, ...] = (1, 4, 16, 48)
    volatility_window: int = 48
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bollinger_window: int = 20
    atr_period: int = 14
    volume_window: int = 48
    spread_window: int = 48
    funding_max_age: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        windows = {
            "volatility_window": self.volatility_window,
            "rsi_period": self.rsi_period,
            "macd_fast": self.macd_fast,
            "macd_slow": self.macd_slow,
            "macd_signal": self.macd_signal,
            "bollinger_window": self.bollinger_window,
            "atr_period": self.atr_period,
            "volume_window": self.volume_window,
            "spread_window": self.spread_window,
        }
        bad = [f"{name}={value}" for name, value in windows.items() if value < 1]
        bad += [f"return horizon {h}" for h in self.return_horizons if h < 1]
        if not self.return_horizons or len(set(self.return_horizons)) != len(self.return_horizons):
            bad.append(f"return_horizons={self.return_horizons} (need distinct horizons)")
        if self.volatility_window < 2 or self.volume_window < 2:
            bad.append("volatility_window and volume_window need at least 2 bars for a std")
        if self.macd_fast >= self.macd_slow:
            bad.append(f"macd_fast={self.macd_fast} must be below macd_slow={self.macd_slow}")
        if self.funding_max_age <= timedelta(0):
            bad.append(f"funding_max_age={self.funding_max_age} must be positive")
        if bad:
            raise FeatureInputError("invalid FeatureParams: " + "; ".join(bad))


DEFAULT_PARAMS = FeatureParams()

FEATURE_DESCRIPTIONS: dict[str, str] = {
    "ret_<h>": "log(close / close h bars earlier)",
    "realized_vol": "rolling std (ddof 1) of 1-bar log returns, per bar, not annualised",
    "rsi": "Wilder RSI on closes, 0 to 100 (null while gains and losses are both zero)",
    "macd": "MACD line (fast EMA - slow EMA of close) divided by close",
    "macd_signal": "EMA of the MACD line divided by close",
    "macd_hist": "(MACD line - signal) divided by close",
    "bb_z": "(close - rolling mean) / rolling population std, as TA-Lib BBANDS",
    "natr": "Wilder average true range divided by close",
    "volume_z": "z-score of log(1 + volume) over the volume window",
    "cs_spread": "Corwin-Schultz (2012) high-low bid-ask spread estimate, as a fraction of price",
    "trade_imbalance": "(buy - sell) / (buy + sell) amount traded inside the candle; null if none",
    "funding_rate": "latest funding rate printed at or before the candle's close; null without one",
    "gap_before": "true when candles are missing right before this one; null on a symbol's first",
    "bars_since_gap": "bars since the current unbroken run began, capped at warmup_bars",
}


def feature_columns(params: FeatureParams = DEFAULT_PARAMS) -> list[str]:
    """The feature columns of ``compute_features``, in order (after ``ts`` and ``symbol``)."""
    return [
        *(f"ret_{h}" for h in params.return_horizons),
        "realized_vol",
        "rsi",
        "macd",
        "macd_signal",
        "macd_hist",
        "bb_z",
        "natr",
        "volume_z",
        "cs_spread",
        "trade_imbalance",
        "funding_rate",
        "gap_before",
        "bars_since_gap",
    ]


def _decay_bars(alpha: float) -> int:
    """Bars after which a seed's weight ``(1 - alpha)^n`` falls below SEED_RESIDUAL."""
    return math.ceil(math.log(SEED_RESIDUAL) / math.log(1.0 - alpha))


def _ema_alpha(period: int) -> float:
    return 2.0 / (period + 1.0)


def warmup_bars(params: FeatureParams = DEFAULT_PARAMS) -> int:
    """Bars of history needed before a row so its features equal a full-history computation.

    Rolling features need their window (plus one bar for the return or previous close they use).
    The recursive ones (RSI, ATR and MACD's EMAs) never forget their seed entirely; it decays
    geometrically, so they need their seeding lookback plus the bars after which the seed's
    weight ``(1 - alpha)^n`` is below SEED_RESIDUAL (1e-12). The seed differs from the full-history
    value by at most the size of the quantity itself, so what remains is far below the 1e-9
    tolerance. For MACD the signal line inherits the line's residual, which decays at the slower
    of the two EMA rates; taking the slowest rate over the whole chain covers that.
    """
    rsi = params.rsi_period + _decay_bars(1.0 / params.rsi_period)
    atr = params.atr_period + _decay_bars(1.0 / params.atr_period)
    slowest = max(
        _decay_bars(_ema_alpha(p)) for p in (params.macd_fast, params.macd_slow, params.macd_signal)
    )
    macd = params.macd_slow + params.macd_signal + slowest
    rolling = max(
        *params.return_horizons,
        params.volatility_window + 1,
        params.bollinger_window,
        params.volume_window,
        params.spread_window + 1,
    )
    return max(rsi, atr, macd, rolling) + 1


# --- expressions ---------------------------------------------------------------------------------
# The features are built in a few ``with_columns`` stages over frames of whole symbols sorted by
# (symbol, ts). Shifts and rolling windows run on the whole column, and the rows whose window
# reaches back into the previous symbol are then set to null by their row number within the symbol
# (``_row``): that is several times cheaper than partitioning each window with ``over``, and polars'
# rolling kernels give the same values, to rounding, as windows started at the symbol. Only the
# recursive means (EWM, Wilder) cannot be cut afterwards, so they run ``over`` the integer symbol
# id ``_sid``, which polars splits into contiguous slices far faster than a string column. Each
# stage keeps only the columns later stages need; intermediate columns start with an underscore.


def _row() -> pl.Expr:
    """Position of the row within its symbol, from 0."""
    return pl.col("_row")


def _from_row(first: int, expr: pl.Expr) -> pl.Expr:
    """``expr`` on rows ``first`` onwards of each symbol, null before: a whole-column window of
    ``first`` bars of history is then within the symbol."""
    return pl.when(_row() >= first).then(expr)


def _lag(column: str, bars: int = 1) -> pl.Expr:
    return _from_row(bars, pl.col(column).shift(bars))


def row_basics() -> list[pl.Expr]:
    """Row numbers and log prices."""
    return [
        pl.int_range(pl.len(), dtype=pl.Int64).over("_sid").alias("_row"),
        pl.col("close").log().alias("_log_close"),
        pl.col("volume").log1p().alias("_log_volume"),
    ]


def bar_steps(params: FeatureParams, step_ms: int) -> list[pl.Expr]:
    """Changes from earlier bars of the same symbol: returns, the previous close and gaps."""
    log_close = pl.col("_log_close")
    step = _from_row(1, pl.col("ts").diff()).dt.total_milliseconds()
    return [
        _lag("close").alias("_prev_close"),
        # ret_1 if asked for: log(close) - log(previous close) with one log fewer
        (log_close - _lag("_log_close")).alias("_bar_return"),
        *(log_return(h) for h in params.return_horizons if h != 1),
        # a symbol's first row starts a run, so forward filling never crosses symbols
        pl.when((step != step_ms).fill_null(True)).then(_row()).alias("_run_start"),
        (step != step_ms).alias("gap_before"),
    ]


def log_return(horizon: int) -> pl.Expr:
    return (pl.col("_log_close") - _lag("_log_close", horizon)).alias(f"ret_{horizon}")


def _larger(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """The larger of two columns, null where ``b`` is (a comparison is several times faster than
    ``max_horizontal`` or ``clip`` with a column bound)."""
    return pl.when(a > b).then(a).otherwise(b)


def _smaller(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """The smaller of two columns, null where ``b`` is."""
    return pl.when(a < b).then(a).otherwise(b)


def overnight_jump() -> pl.Expr:
    """How far the bar's range lies above (positive) or below the previous close, zero when it
    holds the close: Corwin and Schultz (2012) shift the bar's high and low by it to take
    overnight returns out of the range."""
    prev_close = pl.col("_prev_close")
    nearest = _larger(pl.col("low"), _smaller(pl.col("high"), prev_close))
    return nearest - prev_close


def true_range() -> pl.Expr:
    """The bar's range widened to the previous close; null on a symbol's first row, as TA-Lib's
    TRANGE. ``max(high, pc) - min(low, pc)`` is, to the bit, TA-Lib's largest of the three
    differences: whichever it picks is this same subtraction."""
    previous_close = pl.col("_prev_close")
    return _larger(pl.col("high"), previous_close) - _smaller(pl.col("low"), previous_close)


def bar_ranges(params: FeatureParams) -> list[pl.Expr]:
    """One-bar quantities that need the previous close (null on a symbol's first row), rolling
    windows over prices, and the seeded inputs of the MACD EMAs (both seed at row slow-1; the fast
    one's seed is the mean of its last ``fast`` closes there, as TA-Lib aligns them)."""
    close, log_volume, change = (
        pl.col("close"),
        pl.col("_log_volume"),
        pl.col("close") - pl.col("_prev_close"),
    )
    bb_w, volume_w, vol_w, slow = (
        params.bollinger_window,
        params.volume_window,
        params.volatility_window,
        params.macd_slow,
    )
    return [
        change.clip(lower_bound=0.0).alias("_gain"),
        (-change).clip(lower_bound=0.0).alias("_loss"),
        true_range().alias("_true_range"),
        overnight_jump().alias("_jump"),
        # the 1-bar returns start at row 1, so their window is full from row ``vol_w``
        _from_row(vol_w, pl.col("_bar_return").rolling_std(vol_w)).alias("realized_vol"),
        _from_row(bb_w - 1, close.rolling_mean(bb_w)).alias("_bb_mean"),
        close.rolling_std(bb_w, ddof=0).alias("_bb_std"),  # population std, as TA-Lib's BBANDS
        log_volume.rolling_mean(volume_w).alias("_volume_mean"),
        _from_row(volume_w - 1, log_volume.rolling_std(volume_w)).alias("_volume_std"),
        sma_seeded("close", slow - 1, params.macd_fast, "_ema_fast_seeded"),
        sma_seeded("close", slow - 1, slow, "_ema_slow_seeded"),
        bars_since_gap(warmup_bars(params)),
    ]


def corwin_schultz_two_bar() -> pl.Expr:
    """Spread estimate from this bar and the previous one, after Corwin and Schultz (2012),
    "A Simple Way to Estimate Bid-Ask Spreads from Daily High and Low Prices", Journal of Finance
    67(2), 719-760.

    Over two consecutive bars the high-low range holds volatility twice but the spread once, so
    the spread falls out of the one-bar ranges (beta) and the two-bar range (gamma). Negative
    estimates are set to zero, as the paper does before averaging. The previous bar's range needs
    no mask: on a symbol's first row the adjusted range is null, and so is the estimate.
    """
    prev_high, prev_low = pl.col("high").shift(1), pl.col("low").shift(1)
    # the bar's range shifted by the jump, the paper's adjustment for overnight returns
    high, low = pl.col("high") - pl.col("_jump"), pl.col("low") - pl.col("_jump")
    beta = (prev_high / prev_low).log().pow(2) + (high / low).log().pow(2)
    gamma = (_larger(prev_high, high) / _smaller(prev_low, low)).log().pow(2)
    # alpha = (sqrt(2 beta) - sqrt(beta)) / k - sqrt(gamma / k), and the paper's
    # spread 2 (e^alpha - 1) / (1 + e^alpha) is 2 tanh(alpha / 2).
    alpha = (math.sqrt(2.0) - 1.0) / _CS_K * beta.sqrt() - (gamma / _CS_K).sqrt()
    return (2.0 * (alpha / 2.0).tanh()).clip(lower_bound=0.0)


def sma_seeded(column: str, seed_at: int, seed_window: int, name: str) -> pl.Expr:
    """``column`` prepared for a recursive mean that starts at row ``seed_at`` from the mean of
    the ``seed_window`` values ending there (TA-Lib's seeding): null before, the seed at, the
    values after. The seed is a mean of the symbol's own values, whatever symbols precede it."""
    values, row = pl.col(column), _row()
    seed = values.slice(seed_at - seed_window + 1, seed_window).mean().over("_sid")
    return pl.when(row == seed_at).then(seed).when(row > seed_at).then(values).alias(name)


def recursive_mean(seeded: str, alpha: float, name: str) -> pl.Expr:
    """``y = (1 - alpha) y_prev + alpha x`` over a seeded column (EMA, or Wilder's 1/period)."""
    return pl.col(seeded).ewm_mean(alpha=alpha, adjust=False).over("_sid").alias(name)


def bollinger_z() -> pl.Expr:
    mean, std = pl.col("_bb_mean"), pl.col("_bb_std")
    # A flat window has no spread to measure: null, not +-inf. The threshold sits far below any
    # real price move and above the rounding noise of rolling sums.
    return pl.when(std > 1e-10 * mean).then((pl.col("close") - mean) / std).alias("bb_z")


def volume_z() -> pl.Expr:
    std = pl.col("_volume_std")
    return (
        pl.when(std > 1e-10)
        .then((pl.col("_log_volume") - pl.col("_volume_mean")) / std)
        .alias("volume_z")
    )


def spread_and_seeds(params: FeatureParams) -> list[pl.Expr]:
    """The spread estimate, z-scores, the MACD EMAs, and the seeded inputs of RSI and ATR (seeded
    at row ``period`` with the mean of rows 1..period: row 0 has no previous close)."""
    rsi_p, atr_p = params.rsi_period, params.atr_period
    return [
        corwin_schultz_two_bar().alias("_two_bar_spread"),
        bollinger_z(),
        volume_z(),
        sma_seeded("_gain", rsi_p, rsi_p, "_gain_seeded"),
        sma_seeded("_loss", rsi_p, rsi_p, "_loss_seeded"),
        sma_seeded("_true_range", atr_p, atr_p, "_true_range_seeded"),
        recursive_mean("_ema_fast_seeded", _ema_alpha(params.macd_fast), "_ema_fast"),
        recursive_mean("_ema_slow_seeded", _ema_alpha(params.macd_slow), "_ema_slow"),
    ]


def smoothers(params: FeatureParams) -> list[pl.Expr]:
    spread_w = params.spread_window
    return [
        # negative two-bar estimates were set to zero before this average, as in the paper
        _from_row(spread_w, pl.col("_two_bar_spread").rolling_mean(spread_w)).alias("cs_spread"),
        recursive_mean("_gain_seeded", 1.0 / params.rsi_period, "_avg_gain"),
        recursive_mean("_loss_seeded", 1.0 / params.rsi_period, "_avg_loss"),
        recursive_mean("_true_range_seeded", 1.0 / params.atr_period, "_atr"),
        (pl.col("_ema_fast") - pl.col("_ema_slow")).alias("_macd_line"),
    ]


def rsi() -> pl.Expr:
    total = pl.col("_avg_gain") + pl.col("_avg_loss")
    # A run of identical closes has no direction: null rather than TA-Lib's 0 ("oversold").
    return pl.when(total > 0).then(100.0 * pl.col("_avg_gain") / total).alias("rsi")


def bars_since_gap(cap: int) -> pl.Expr:
    """Capped, so that a row depends on finite history (``cap`` is the warm-up)."""
    run_start = pl.col("_run_start").forward_fill()
    return (_row() - run_start).clip(upper_bound=cap).alias("bars_since_gap")


def macd_relative() -> list[pl.Expr]:
    """MACD line, signal and histogram, each divided by the close."""
    close, line, signal = pl.col("close"), pl.col("_macd_line"), pl.col("_macd_signal")
    return [
        (line / close).alias("macd"),
        (signal / close).alias("macd_signal"),
        ((line - signal) / close).alias("macd_hist"),
    ]


def candle_feature_stages(params: FeatureParams, step_ms: int) -> list[list[pl.Expr]]:
    """Every candle-only feature, as successive ``with_columns`` stages over whole symbols."""
    signal_seed_at = params.macd_slow + params.macd_signal - 2
    return [
        row_basics(),
        bar_steps(params, step_ms),
        bar_ranges(params),
        spread_and_seeds(params),
        smoothers(params),
        [
            rsi(),
            (pl.col("_atr") / pl.col("close")).alias("natr"),
            sma_seeded("_macd_line", signal_seed_at, params.macd_signal, "_macd_line_seeded"),
        ],
        [recursive_mean("_macd_line_seeded", _ema_alpha(params.macd_signal), "_macd_signal")],
        macd_relative(),
    ]


# --- trades and funding ------------------------------------------------------------------------


def _require_columns(frame: pl.DataFrame, schema: dict[str, pl.DataType], what: str) -> None:
    problems = []
    for name, dtype in schema.items():
        if name not in frame.columns:
            problems.append(f"missing column {name!r} ({dtype})")
        elif frame.schema[name] != dtype:
            problems.append(f"column {name!r} is {frame.schema[name]}, expected {dtype}")
    if problems:
        raise FeatureInputError(f"{what}: " + "; ".join(problems))


def trade_imbalance(candles: pl.DataFrame, trades: pl.DataFrame, step_ms: int) -> pl.DataFrame:
    """Per candle (symbol, ts): signed traded amount over total, from trades in [ts, ts + step).

    Each trade goes to the latest candle that opened at or before it, and only if that candle
    is still open at the trade's time; trades that fall in a gap between candles count nowhere.
    """
    _require_columns(
        trades,
        {"ts": TS_TYPE, "symbol": pl.String(), "side": pl.String(), "amount": pl.Float64()},
        "trades",
    )
    sides = set(trades.get_column("side").unique().to_list())
    if not sides <= {"buy", "sell"}:
        raise FeatureInputError(f"trades: side must be 'buy' or 'sell', found {sorted(sides)}")
    opens = candles.select(pl.col("symbol"), pl.col("ts").alias("candle_ts")).sort(
        "symbol", "candle_ts"
    )
    located = (
        trades.select("symbol", "ts", "side", "amount")
        .sort("symbol", "ts")
        .join_asof(opens, left_on="ts", right_on="candle_ts", by="symbol", check_sortedness=False)
        .filter(pl.col("ts") < pl.col("candle_ts") + pl.duration(milliseconds=step_ms))
    )
    signed = pl.when(pl.col("side") == "buy").then(pl.col("amount")).otherwise(-pl.col("amount"))
    return (
        located.group_by("symbol", "candle_ts")
        .agg(signed.sum().alias("signed"), pl.col("amount").sum().alias("total"))
        .select(
            "symbol",
            pl.col("candle_ts").alias("ts"),
            pl.when(pl.col("total") > 0)
            .then(pl.col("signed") / pl.col("total"))
            .alias("trade_imbalance"),
        )
    )


def latest_funding(
    candles: pl.DataFrame, funding: pl.DataFrame, step_ms: int, max_age: timedelta
) -> pl.DataFrame:
    """Per candle (symbol, ts): the last funding rate printed at or before the candle's close."""
    _require_columns(
        funding, {"ts": TS_TYPE, "symbol": pl.String(), "rate": pl.Float64()}, "funding"
    )
    closes = candles.select(
        "symbol", "ts", (pl.col("ts") + pl.duration(milliseconds=step_ms)).alias("close_ts")
    ).sort("symbol", "close_ts")
    prints = funding.select(
        "symbol", pl.col("ts").alias("close_ts"), pl.col("rate").alias("funding_rate")
    ).sort("symbol", "close_ts")
    # backward with exact matches: a print stamped exactly at the close is known at the close.
    return closes.join_asof(
        prints,
        on="close_ts",
        by="symbol",
        strategy="backward",
        tolerance=max_age,
        check_sortedness=False,
    ).select("symbol", "ts", "funding_rate")


# --- the entry point -----------------------------------------------------------------------------


def _symbol_id() -> pl.Expr:
    """0, 1, ... for each run of rows of one symbol: one id per symbol once the frame is sorted.
    Integer ids make the order checks and the partitions far cheaper than the strings."""
    # An rle id never decreases, sorted frame or not.
    return pl.col("symbol").rle_id().set_sorted().alias("_sid")


def _symbol_starts(candles: pl.DataFrame) -> list[int]:
    """The first row of each run of ``_sid``, then the height."""
    ids = candles.get_column("_sid")
    count = ids[-1] + 1 if len(ids) else 0
    return [*ids.search_sorted(pl.Series(range(count), dtype=ids.dtype)).to_list(), len(ids)]


def _not_after_previous() -> pl.Expr:
    """The row is not later than the previous row of its symbol (a duplicate, or out of order)."""
    return (pl.col("_sid") == pl.col("_sid").shift(1)) & (pl.col("ts") <= pl.col("ts").shift(1))


def _is_in_contract_order(candles: pl.DataFrame) -> bool:
    # Runs of one symbol in sorted order means each symbol is one run; neighbouring runs differ.
    run_symbols = candles.get_column("symbol").gather(_symbol_starts(candles)[:-1])
    return run_symbols.is_sorted() and not candles.select(_not_after_previous().any()).item()


def _value_problems(candles: pl.DataFrame) -> list[str]:
    prices = [pl.col(c) for c in ("open", "high", "low", "close")]
    volume = pl.col("volume")
    # A cheap pass of aggregates first: no nulls, positive minimum and a finite sum (no NaN or
    # infinity) clear a column without a mask per row.
    clear = candles.select(
        pl.all_horizontal(
            (p.null_count() == 0) & (p.min() > lowest) & p.sum().is_finite()
            for p, lowest in [*((p, 0.0) for p in prices), (volume, -1.0)]
        )
    ).item()
    if clear:
        return []
    counts = candles.select(
        # NaN compares as larger than any number in polars, so finiteness is tested on its own.
        bad_prices=pl.any_horizontal(
            [~(p > 0) | ~p.is_finite() | p.is_null() for p in prices]
        ).sum(),
        bad_volumes=(~(volume >= 0) | ~volume.is_finite() | volume.is_null()).sum(),
    ).row(0, named=True)
    problems = []
    if counts["bad_prices"]:
        problems.append(f"{counts['bad_prices']} rows with a missing, NaN or non-positive price")
    if counts["bad_volumes"]:
        problems.append(f"{counts['bad_volumes']} rows with a missing, NaN or negative volume")
    return problems


def _in_contract_order(candles: pl.DataFrame) -> pl.DataFrame:
    """The candles sorted by (symbol, ts), checked for duplicates and unusable values, with the
    symbol ids in ``_sid``."""
    candles = candles.with_columns(_symbol_id())
    problems = []
    if not _is_in_contract_order(candles):
        candles = candles.sort("symbol", "ts").with_columns(_symbol_id())
        duplicates = candles.select(_not_after_previous().sum()).item()
        if duplicates:
            problems.append(f"{duplicates} duplicate (symbol, ts) rows")
    problems += _value_problems(candles)
    if problems:
        raise FeatureInputError("candles: " + "; ".join(problems))
    return candles


# Rows per batch: small enough that a batch's intermediate columns stay small, large enough that
# polars' per-query overhead does not show.
BATCH_ROWS = 500_000
_CANDLE_INPUTS = ("ts", "symbol", "high", "low", "close", "volume", "_sid")
_JOINED_COLUMNS = ("trade_imbalance", "funding_rate")


def _symbol_batches(candles: pl.DataFrame, max_rows: int) -> list[pl.DataFrame]:
    """Consecutive slices of sorted ``candles``, each of whole symbols and about ``max_rows``,
    holding only the columns the candle features read, in one buffer per column (polars runs
    windows on a single chunk much faster; a frame read from parquet has dozens)."""
    starts = _symbol_starts(candles)
    batches, start, length = [], 0, 0
    for size in (end - begin for begin, end in itertools.pairwise(starts)):
        if length and length + size > max_rows:
            batches.append(candles.slice(start, length).select(_CANDLE_INPUTS).rechunk())
            start, length = start + length, 0
        length += size
    batches.append(candles.slice(start, length).select(_CANDLE_INPUTS).rechunk())
    return batches


def _candle_features(batch: pl.DataFrame, params: FeatureParams, step_ms: int) -> pl.LazyFrame:
    """``ts``, ``symbol`` and the features of a batch of whole symbols, the trade and funding
    columns left null. After each stage only the columns that later stages read are kept, so
    that intermediates are freed early."""
    outputs = feature_columns(params)
    stages = candle_feature_stages(params, step_ms)
    query, columns = batch.lazy(), list(batch.columns)
    for i, stage in enumerate(stages):
        columns += [e.meta.output_name() for e in stage]
        read_later = {c for s in stages[i + 1 :] for e in s for c in e.meta.root_names()}
        columns = [
            c for c in columns if c in read_later | {"ts", "symbol", "_bar_return", *outputs}
        ]
        query = query.with_columns(stage).select(columns)
    # ret_1 is the 1-bar return already computed
    ret_1 = [pl.col("_bar_return").alias("ret_1")] if 1 in params.return_horizons else []
    joined = [pl.lit(None, pl.Float64).alias(c) for c in _JOINED_COLUMNS]
    return query.with_columns(*ret_1, *joined).select("ts", "symbol", *outputs)


def compute_features(
    candles: pl.DataFrame,
    timeframe: str,
    params: FeatureParams = DEFAULT_PARAMS,
    trades: pl.DataFrame | None = None,
    funding: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Features of every candle of every symbol: ``ts``, ``symbol``, then ``feature_columns``.

    ``candles`` follows the candle contract; the result has one row per candle, sorted by
    (symbol, ts) as the contract orders candles. ``trades`` (TRADE_SCHEMA) and ``funding``
    (FUNDING_SCHEMA) are optional; symbols without them get null ``trade_imbalance`` and
    ``funding_rate``. Rows near the start of a symbol's history are null where a window is not yet
    full, and recursive indicators need ``warmup_bars(params)`` bars to be exact.

    Raises CandleSchemaError for a frame that is not a candle frame, FeatureInputError for
    duplicate candles, missing, NaN or non-positive prices, negative volumes and malformed trades or
    funding, and ConfigError for an unknown timeframe.
    """
    step_ms = timeframe_ms(timeframe)
    candles = _in_contract_order(require_candle_schema(candles, "compute_features"))

    # Symbols are independent, so whole symbols are batched into frames of about BATCH_ROWS rows
    # that run in parallel: the intermediate columns of a batch are small, which bounds memory and
    # keeps both cores busy.
    batches = [_candle_features(b, params, step_ms) for b in _symbol_batches(candles, BATCH_ROWS)]
    features = pl.concat(pl.collect_all(batches, engine="in-memory"), rechunk=False)
    if trades is None and funding is None:
        return features
    joined = features.lazy()
    if trades is not None:
        imbalance = trade_imbalance(candles, trades, step_ms)
        joined = joined.drop("trade_imbalance").join(
            imbalance.lazy(), on=["symbol", "ts"], how="left", maintain_order="left"
        )
    if funding is not None:
        rates = latest_funding(candles, funding, step_ms, params.funding_max_age)
        joined = joined.drop("funding_rate").join(
            rates.lazy(), on=["symbol", "ts"], how="left", maintain_order="left"
        )
    return joined.select("ts", "symbol", *feature_columns(params)).collect(engine="in-memory")
