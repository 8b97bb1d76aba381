from datetime import UTC, datetime

import polars as pl
import pytest

from sapphire_domain.features import compute_features
from sapphire_market.replay import ReplayExchange

STEP_MS = 1_800_000


def _ms(day: datetime) -> int:
    return int(day.timestamp() * 1000)


@pytest.fixture(scope="session")
def features() -> pl.DataFrame:
    """Real features of two symbols over 40 days of 2018."""
    exchange = ReplayExchange()
    start, end = datetime(2018, 3, 1, tzinfo=UTC), datetime(2018, 4, 10, tzinfo=UTC)
    candles = pl.concat(
        exchange.fetch_candles(s, "30m", _ms(start), _ms(end)) for s in ("BTC/USD", "ETH/USD")
    )
    return compute_features(candles.sort("symbol", "ts"), "30m")
