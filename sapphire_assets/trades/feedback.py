"""Frames of fills and of trade feedback: pure polars, no Dagster, so they test on their own.

Timing follows ``sapphire_domain.agents.labels``: a decision on the bar at ``ts`` is taken at
its close, ``ts + step`` (the target's ``created_at``). A fill's outcome mirrors the label the
agents learn: from the fill price to the close of the ``horizon``-th bar counted from the bar the
fill happened in, so a fill at ``created_at`` is scored over exactly its decision's label window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl

from sapphire_domain.candles import TS_TYPE
from sapphire_domain.messages import Fill, Side

FILL_SCHEMA: dict[str, pl.DataType] = {
    "ts": TS_TYPE,
    "fill_id": pl.String(),
    "client_order_id": pl.String(),
    "target_version": pl.Int64(),
    "symbol": pl.String(),
    "side": pl.String(),
    "quantity": pl.Float64(),
    "price": pl.Float64(),
    "fee": pl.Float64(),
    "liquidity": pl.String(),
    "venue": pl.String(),
    "reference_price": pl.Float64(),
    "stream_id": pl.String(),
}


def fills_frame(fills: Iterable[tuple[str, Fill]]) -> pl.DataFrame:
    """(stream id, fill) pairs as rows of FILL_SCHEMA, in the order given."""
    rows = [
        {
            **fill.model_dump(exclude={"kind"}),
            "side": fill.side.value,
            "stream_id": stream_id,
        }
        for stream_id, fill in fills
    ]
    return pl.DataFrame(rows, schema=FILL_SCHEMA).select(list(FILL_SCHEMA))


def conform_fills(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with exactly the FILL_SCHEMA columns and types (stored tables may widen)."""
    return frame.select(list(FILL_SCHEMA)).cast(pl.Schema(FILL_SCHEMA))


def merge_fills(stored: pl.DataFrame, read: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Stored rows plus newly read ones, one row per ``fill_id``; returns (rows, duplicates).

    Stored rows win, so a fill keeps the stream id it was first stored with and rematerialising
    gives the same rows; the order is by time, then fill id, whatever order the stream had.
    """
    both = pl.concat([conform_fills(stored), read], how="vertical")
    merged = both.unique("fill_id", keep="first", maintain_order=True).sort("ts", "fill_id")
    return merged, both.height - merged.height


def side_sign(side: str | pl.Expr) -> pl.Expr:
    column = pl.col(side) if isinstance(side, str) else side
    return pl.when(column == Side.BUY.value).then(1.0).otherwise(-1.0)


def slippage_bps() -> pl.Expr:
    """What the fill cost against the decision's reference price, in basis points: positive
    means a worse price (paid more on a buy, received less on a sell)."""
    return (
        side_sign("side") * (pl.col("price") / pl.col("reference_price") - 1.0) * 10_000.0
    ).alias("slippage_bps")


def fill_outcomes(
    fills: pl.DataFrame, candles: pl.DataFrame, horizon: int, step_ms: int
) -> pl.DataFrame:
    """``fill_id``, ``exit_ts``, ``exit_price``, ``forward_return`` and ``realised_return``.

    ``forward_return`` is ``ln(exit close / fill price)``; ``realised_return`` is what the fill's
    side earned on it after its fee, as a fraction of its notional. Both are null until every
    one of the ``horizon`` bars is in ``candles``: a missing bar (a gap, or data not yet
    there) leaves the outcome unknown rather than guessed.
    """
    if horizon < 1:
        raise ValueError(f"the outcome horizon must be at least one bar, got {horizon}")
    step = pl.duration(milliseconds=step_ms)
    windows = fills.select(
        "fill_id",
        "symbol",
        "side",
        "price",
        "quantity",
        "fee",
        pl.col("ts").dt.truncate(f"{step_ms}ms").alias("first_bar"),
    ).with_columns((pl.col("first_bar") + step * (horizon - 1)).alias("exit_bar"))
    bars = (
        windows.join(candles.select("ts", "symbol", "close"), on="symbol", how="inner")
        .filter(pl.col("ts").is_between(pl.col("first_bar"), pl.col("exit_bar")))
        .group_by("fill_id")
        .agg(
            pl.col("ts").n_unique().alias("bars"),
            pl.col("close").filter(pl.col("ts") == pl.col("exit_bar")).first().alias("exit_close"),
        )
    )
    known = pl.col("bars") == horizon
    forward = pl.when(known).then((pl.col("exit_close") / pl.col("price")).log())
    return (
        windows.join(bars, on="fill_id", how="left")
        .with_columns(forward.alias("forward_return"))
        .select(
            "fill_id",
            (pl.col("exit_bar") + step).alias("exit_ts"),
            pl.when(known).then(pl.col("exit_close")).alias("exit_price"),
            "forward_return",
            (
                side_sign("side") * pl.col("forward_return")
                - pl.col("fee") / (pl.col("quantity") * pl.col("price"))
            ).alias("realised_return"),
        )
    )


def forecast_columns(agent: str, forecasts: pl.DataFrame) -> pl.DataFrame:
    """One agent's forecasts as ``ts``, ``symbol`` and ``<agent>_<field>`` columns."""
    return forecasts.select(
        "ts",
        "symbol",
        *(pl.col(c).alias(f"{agent}_{c}") for c in ("model_version", "p_up", "expected_return")),
    ).unique(["ts", "symbol"], keep="last")


def trade_feedback_frame(
    fills: pl.DataFrame,
    targets: pl.DataFrame,
    combined: pl.DataFrame,
    forecasts: dict[str, pl.DataFrame],
    candles: pl.DataFrame,
    horizon: int,
    step_ms: int,
) -> pl.DataFrame:
    """Each fill joined to the target behind it, that target's signal and forecasts, and what
    happened next. One row per fill; a fill whose target is not found keeps its row with
    ``explained`` false, so it shows up instead of vanishing from the join."""
    versions = targets.select(
        pl.col("version").alias("target_version"),
        "ts",
        pl.col("created_at").alias("target_created_at"),
        pl.col("valid_until").alias("target_valid_until"),
    ).unique("target_version", keep="last")
    weights = targets.select(
        pl.col("version").alias("target_version"),
        "symbol",
        pl.col("weight").alias("target_weight"),
    ).unique(["target_version", "symbol"], keep="last")
    signal = combined.select(
        "ts",
        "symbol",
        "model_versions",
        pl.col("p_up").alias("combined_p_up"),
        pl.col("expected_return").alias("combined_expected_return"),
        pl.col("confidence").alias("combined_confidence"),
        pl.col("agents").alias("combined_agents"),
    ).unique(["ts", "symbol"], keep="last")
    frame = (
        fills.rename({"ts": "fill_ts"})
        .drop("stream_id")
        .with_columns(
            (pl.col("quantity") * pl.col("price")).alias("notional"),
            slippage_bps(),
        )
        .join(versions, on="target_version", how="left")
        .join(weights, on=["target_version", "symbol"], how="left")
        .with_columns(
            pl.col("ts").is_not_null().alias("explained"),
            pl.col("ts").dt.date().cast(pl.String).alias("source_partition"),
        )
        .join(signal, on=["ts", "symbol"], how="left")
    )
    for agent, rows in sorted(forecasts.items()):
        frame = frame.join(forecast_columns(agent, rows), on=["ts", "symbol"], how="left")
    outcomes = fill_outcomes(fills, candles, horizon, step_ms)
    return (
        frame.join(outcomes, on="fill_id", how="left")
        .with_columns(pl.lit(horizon, pl.Int64).alias("horizon_bars"))
        .sort("fill_ts", "fill_id")
    )


def unexplained(feedback: pl.DataFrame) -> Sequence[str]:
    return feedback.filter(~pl.col("explained"))["fill_id"].to_list()
