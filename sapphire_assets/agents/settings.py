"""Settings of the agents' pipeline, with defaults for 30-minute bars."""

from dataclasses import dataclass, field

from sapphire_domain.agents.models import ModelParams
from sapphire_domain.agents.walk_forward import WalkForwardParams
from sapphire_domain.coordinator import HedgeParams
from sapphire_domain.portfolio import PortfolioParams


@dataclass(frozen=True)
class AgentSettings:
    """Attributes:
    walk_forward: label horizon, embargo, training window, holdout and retrain period.
    model: LightGBM settings.
    hedge: the coordinator's learning.
    portfolio: risk budgets of the target portfolio.
    target_valid_bars: bars a target stays valid after it is created.
    retrain_cron: schedule of ``retrain_agents``.
    """

    walk_forward: WalkForwardParams = field(default_factory=WalkForwardParams)
    model: ModelParams = field(default_factory=ModelParams)
    hedge: HedgeParams = field(default_factory=HedgeParams)
    portfolio: PortfolioParams = field(default_factory=PortfolioParams)
    target_valid_bars: int = 2
    retrain_cron: str = "0 3 * * 0"
