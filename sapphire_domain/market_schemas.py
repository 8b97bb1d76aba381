"""Contracts of the market frames besides candles: public trades and perpetual funding."""

from __future__ import annotations

import polars as pl

from sapphire_domain.candles import TS_TYPE

TRADE_SCHEMA: dict[str, pl.DataType] = {
    "ts": TS_TYPE,
    "symbol": pl.String(),
    "side": pl.String(),  # "buy" or "sell": the aggressor's side
    "price": pl.Float64(),
    "amount": pl.Float64(),
}

FUNDING_SCHEMA: dict[str, pl.DataType] = {
    "ts": TS_TYPE,  # when the funding rate applied
    "symbol": pl.String(),
    "rate": pl.Float64(),  # per funding interval, as a fraction (0.0001 is 1 bp)
}


def empty_trades() -> pl.DataFrame:
    return pl.DataFrame(schema=TRADE_SCHEMA)


def empty_funding() -> pl.DataFrame:
    return pl.DataFrame(schema=FUNDING_SCHEMA)
