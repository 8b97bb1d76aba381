"""The one interface of every market data source: a live exchange, the replay, synthetic data."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import polars as pl


@runtime_checkable
class MarketDataSource(Protocol):
    """Closed candles, and trades and funding where the source has them.

    Times are UTC epoch milliseconds; ranges are half-open, ``[start_ms, end_ms)`` on the candle's
    open time. A candle is returned only once it has closed at the source's ``now_ms()``.

    Errors: ``UnknownSymbolError`` for a symbol the source does not list,
    ``ExchangeUnavailableError`` once retries are spent on network errors, and
    ``ExchangeRejectedError`` for errors that retrying cannot fix.
    """

    name: str

    def now_ms(self) -> int:
        """The source's current time: the exchange's clock, or the replay's simulated clock."""
        ...

    def list_symbols(self) -> list[str]: ...

    def fetch_candles(
        self, symbol: str, timeframe: str, start_ms: int, end_ms: int
    ) -> pl.DataFrame:
        """Closed candles in the candle contract (``sapphire_domain.candles``), sorted by ts."""
        ...

    def fetch_trades(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Public trades in ``TRADE_SCHEMA``, or None when the source has no trades for it."""
        ...

    def fetch_funding(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Funding rates in ``FUNDING_SCHEMA``, or None when the symbol has no funding."""
        ...
