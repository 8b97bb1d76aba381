"""The portfolio orchestrator: target weights from the combined signal, under risk budgets.

Method, in order:

1. Direction and conviction: ``s = 2 p_up - 1`` in [-1, 1] (zero below ``min_confidence``).
2. Volatility targeting: each symbol gets an equal share of the risk budget. With per-bar
   volatility ``sigma_i`` and a per-bar portfolio target ``sigma*`` (the annual target scaled by
   ``sqrt(bars per year)``), ``w_i = s_i * sigma* / (sqrt(N) * sigma_i)``, so at full conviction
   and uncorrelated symbols the portfolio runs at the target volatility. A symbol without a
   volatility estimate gets no position (never an unscaled one).
3. Caps: each ``|w_i|`` at most ``max_weight``; then the gross ``sum |w_i|`` at most
   ``max_gross``, by scaling every weight down together.
4. No-trade band: a symbol whose new weight is within ``no_trade_band`` of its previous target
   keeps the previous one, which saves the turnover of chasing noise. If keeping old weights
   pushes the gross over its cap, everything is scaled down again, so the caps always hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sapphire_domain.errors import SapphireError


class PortfolioInputError(SapphireError):
    """The signal handed to the portfolio orchestrator is unusable."""


@dataclass(frozen=True)
class PortfolioParams:
    """Attributes:
    target_vol_annual: annualised volatility the portfolio aims at (0.2 is 20 %).
    max_weight: largest absolute weight of one symbol, as a fraction of equity.
    max_gross: largest sum of absolute weights (1.0 is no leverage).
    no_trade_band: smallest weight change worth trading.
    min_confidence: signals less confident than this give no position.
    """

    target_vol_annual: float = 0.20
    max_weight: float = 0.25
    max_gross: float = 1.0
    no_trade_band: float = 0.02
    min_confidence: float = 0.0


def target_weights(
    p_up: Mapping[str, float],
    volatility: Mapping[str, float | None],
    previous: Mapping[str, float],
    bars_per_year: float,
    params: PortfolioParams = PortfolioParams(),
) -> dict[str, float]:
    """Signed target weights per symbol of ``p_up`` (symbols not in ``p_up`` go flat)."""
    bad = [s for s, p in p_up.items() if not (0.0 <= p <= 1.0)]
    if bad:
        raise PortfolioInputError(f"p_up outside [0, 1] (or NaN) for {bad}")
    n = max(len(p_up), 1)
    per_bar_target = params.target_vol_annual / math.sqrt(bars_per_year)
    weights: dict[str, float] = {}
    for symbol, p in p_up.items():
        signal = 2 * p - 1
        sigma = volatility.get(symbol)
        if abs(signal) < params.min_confidence or sigma is None or not sigma > 0:
            weights[symbol] = 0.0
            continue
        raw = signal * per_bar_target / (math.sqrt(n) * sigma)
        weights[symbol] = max(-params.max_weight, min(params.max_weight, raw))
    weights = _cap_gross(weights, params.max_gross)
    for symbol in set(previous) - set(weights):
        weights[symbol] = 0.0
    banded = {
        s: (previous[s] if s in previous and abs(w - previous[s]) < params.no_trade_band else w)
        for s, w in weights.items()
    }
    return _cap_gross(banded, params.max_gross)


def _cap_gross(weights: dict[str, float], max_gross: float) -> dict[str, float]:
    gross = sum(abs(w) for w in weights.values())
    if gross <= max_gross or gross == 0:
        return weights
    return {s: w * max_gross / gross for s, w in weights.items()}
