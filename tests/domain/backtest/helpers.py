"""Small hand-made markets for the backtest tests."""

import numpy as np

from sapphire_domain.backtest import MarketData

START_MS = 1_704_067_200_000  # 2024-01-01
STEP_MS = 1_800_000


def market(close: np.ndarray, open_: np.ndarray | None = None, **extra: np.ndarray) -> MarketData:
    close = np.asarray(close, dtype=float).reshape(len(close), -1)
    open_ = close if open_ is None else np.asarray(open_, dtype=float).reshape(close.shape)
    bars, n = close.shape
    return MarketData(
        ts=START_MS + STEP_MS * np.arange(bars, dtype=np.int64),
        symbols=tuple(f"S{j}/USD" for j in range(n)),
        open=open_,
        high=np.maximum(open_, close),
        low=np.minimum(open_, close),
        close=close,
        volume=np.full(close.shape, 1e6),
        **extra,
    )
