"""Settings of the agents' pipeline, with defaults for 30-minute bars."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from sapphire_domain.agents.models import ModelParams
from sapphire_domain.agents.specs import AGENTS
from sapphire_domain.agents.walk_forward import WalkForwardParams
from sapphire_domain.coordinator import HedgeParams
from sapphire_domain.errors import ConfigError
from sapphire_domain.portfolio import PortfolioParams

# quant: the agent's LightGBM model; llm_server: a ``vllm serve`` over HTTP; llm_offline: the
# batched ``vllm.LLM`` engine. Both LLM kinds fall back to the quantitative model, row by row.
BackendKind = Literal["quant", "llm_server", "llm_offline"]
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)


def parse_backends(raw: Mapping[str, Any] | None) -> dict[str, BackendKind]:
    """``{agent: kind}`` from configuration, checked: unknown agents or kinds are a ConfigError."""
    backends: dict[str, BackendKind] = {}
    for agent, kind in (raw or {}).items():
        if agent not in AGENTS:
            raise ConfigError(f"agents.backends: unknown agent {agent!r}; one of {sorted(AGENTS)}")
        if kind not in BACKEND_KINDS:
            raise ConfigError(
                f"agents.backends.{agent}: {kind!r} is not one of {', '.join(BACKEND_KINDS)}"
            )
        backends[agent] = kind
    return backends


@dataclass(frozen=True)
class AgentSettings:
    """Attributes:
    walk_forward: label horizon, embargo, training window, holdout and retrain period.
    model: LightGBM settings.
    hedge: the coordinator's learning.
    portfolio: risk budgets of the target portfolio.
    target_valid_bars: bars a target stays valid after it is created.
    retrain_cron: schedule of ``retrain_agents``.
    backends: agent -> backend kind (``quant``, ``llm_server``, ``llm_offline``); an agent not
        named uses ``quant``. The LLM kinds need the ``llm`` resource (``resources.llm``).
    feedback_boost: how much more a traded row weighs per unit of its relative realised return
        when challengers retrain on trade feedback (``feedback_sample_weights``).
    """

    walk_forward: WalkForwardParams = field(default_factory=WalkForwardParams)
    model: ModelParams = field(default_factory=ModelParams)
    hedge: HedgeParams = field(default_factory=HedgeParams)
    portfolio: PortfolioParams = field(default_factory=PortfolioParams)
    target_valid_bars: int = 2
    retrain_cron: str = "0 3 * * 0"
    # A dict is unhashable: kept out of the frozen dataclass's hash.
    backends: Mapping[str, BackendKind] = field(default_factory=dict, hash=False)
    feedback_boost: float = 1.0

    def __post_init__(self) -> None:
        parse_backends(self.backends)

    def backend_for(self, agent: str) -> BackendKind:
        return self.backends.get(agent, "quant")
