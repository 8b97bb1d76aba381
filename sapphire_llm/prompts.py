"""One prompt per agent role, built from a compact summary of the agent's feature row.

A prompt holds the role's brief, the symbol, the time, the horizon, the agent's features as
``name=value`` pairs with four significant digits, for the timeseries role the recent path of
1-bar returns, and for sentiment any headlines configured for the symbol. It ends with the answer
format. Only the row at ``ts`` and rows before it in the same frame are read, so a prompt knows
nothing after ``ts``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sapphire_llm.schema import MAX_RETURN_BP, RATIONALE_MAX_CHARS

if TYPE_CHECKING:  # polars is imported where frames are read, so GPU hosts can render prompts
    import polars as pl

# Part of every LLM row's model version and of the cache key: change it when a brief changes.
PROMPT_VERSION = "p2"  # p2: rationale bound 100 -> 48 characters

ROLE_BRIEFS: dict[str, str] = {
    "momentum": "You are the momentum agent of a crypto trading desk. Judge trend and momentum "
    "from log returns over several horizons, RSI, MACD (relative to price) and Bollinger z.",
    "microstructure": "You are the microstructure agent of a crypto trading desk. Judge the "
    "spread estimate, order-flow imbalance, volume anomalies and range-based volatility.",
    "sentiment": "You are the sentiment agent of a crypto trading desk. Judge positioning: the "
    "funding rate, volume against the price trend, and headlines when given.",
    "timeseries": "You are the time-series agent of a crypto trading desk. Forecast the next "
    "return from the recent path of 1-bar log returns and the volatility regime.",
}
# Bars of 1-bar returns (oldest first) shown to roles that read the path itself.
PATH_BARS: dict[str, int] = {"timeseries": 8}

ANSWER_FORMAT = (
    "Answer with JSON only: up_pct = chance in percent that the return over the horizon is "
    f"positive; ret_bp = expected log return in basis points (within +-{MAX_RETURN_BP}); "
    f"conf_pct = confidence in percent; why = reason, at most {RATIONALE_MAX_CHARS} characters."
)


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "na"
    return f"{value:.4g}"


def render_prompt(
    role: str,
    symbol: str,
    ts: str,
    horizon: int,
    features: Mapping[str, float | None],
    path_bp: Sequence[float],
    headlines: Sequence[str] = (),
    role_text: str = "",
) -> str:
    """The prompt text; ``role_text`` briefs a role that has no brief of its own here."""
    brief = (
        ROLE_BRIEFS.get(role) or f"You are the {role} agent of a crypto trading desk: {role_text}."
    )
    lines = [
        brief,
        f"{symbol} at {ts}, horizon {horizon} bars.",
        "features: " + " ".join(f"{name}={_number(value)}" for name, value in features.items()),
    ]
    if path_bp:
        lines.append(
            "last 1-bar returns, bp, oldest first: " + " ".join(_number(r) for r in path_bp)
        )
    if headlines:
        lines.append("headlines: " + " | ".join(headlines))
    lines.append(ANSWER_FORMAT)
    return "\n".join(lines)


def build_prompts(
    role: str,
    features: pl.DataFrame,
    columns: Sequence[str],
    horizon: int,
    *,
    role_text: str = "",
    headlines: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """One prompt per row of ``features`` (which holds ``ts``, ``symbol`` and ``columns``), in
    the frame's order."""
    import polars as pl

    bars = PATH_BARS.get(role, 0)
    lags = [f"_lag_{k}" for k in range(bars, 0, -1)]
    # Rows before ts of the same symbol; a lag past the frame's start is null and left out.
    frame = features.with_row_index("_order").sort("symbol", "ts", maintain_order=True)
    frame = frame.with_columns(
        (pl.col("ret_1").shift(k).over("symbol") * 10_000).alias(f"_lag_{k}")
        for k in range(1, bars + 1)
    ).sort("_order")
    prompts = []
    for row in frame.iter_rows(named=True):
        path = [row[lag] for lag in lags if row[lag] is not None]
        prompts.append(
            render_prompt(
                role,
                row["symbol"],
                row["ts"].strftime("%Y-%m-%dT%H:%M"),
                horizon,
                {name: row[name] for name in columns},
                path,
                (headlines or {}).get(row["symbol"], ()),
                role_text,
            )
        )
    return prompts
