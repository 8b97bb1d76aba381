"""Real Dagster runs of an agent served by the LLM backend (``backend: llm_server``).

The agent's quantitative model is trained first (it is the LLM backend's fallback); then its
forecasts are materialised through ``LlmResource`` against an unreachable port, and, where vLLM
is installed, against a real ``vllm serve`` of the tiny random-weight model.
"""

from collections.abc import Callable
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from resources.llm import LlmResource
from resources.model_store import ModelStoreResource
from sapphire_assets.agents.assets import build_agent_assets
from sapphire_domain.agents.forecast import validate_forecasts
from tests.assets.conftest import Platform, settings_with
from tests.assets.test_agents import SMALL

# The real engine's fixtures (vLLM in var/llm-venv, skipped without it), shared with tests/llm.
from tests.llm.conftest import (  # noqa: F401
    SERVED_MODEL,
    free_port,
    llm_python,
    tiny_model,
    vllm_server,
)

DAY = "2018-03-14"
LLM_MOMENTUM = replace(SMALL, backends={"momentum": "llm_server"})


def fallbacks(reason: str) -> float:
    labels = {"agent": "momentum", "reason": reason}
    return REGISTRY.get_sample_value("sapphire_llm_fallbacks_total", labels) or 0.0


def answers(source: str) -> float:
    labels = {"agent": "momentum", "source": source}
    return REGISTRY.get_sample_value("sapphire_llm_answers_total", labels) or 0.0


def llm_platform(make: Callable[..., Platform], base_url: str, timeout_s: float) -> Platform:
    """One symbol (fewer prompts), momentum on the LLM, its quantitative model trained."""
    platform = make(settings_with(symbols=["BTC/USD"]))
    assets, checks, jobs, _ = build_agent_assets(platform.settings, LLM_MOMENTUM)
    platform.override(
        assets,
        checks,
        jobs=jobs,
        model_store=ModelStoreResource(root=str(platform.state / "models")),
        llm=LlmResource(
            base_url=base_url,
            model=SERVED_MODEL,
            timeout_s=timeout_s,
            concurrency=8,
            cache_dir=str(platform.state / "llm_cache"),
        ),
    )
    platform.materialize(
        ["candles", "trades", "funding_rates"], partition_range=("2018-02-15", "2018-03-14")
    )
    platform.materialize("features", partition_range=("2018-03-01", "2018-03-14"))
    platform.materialize("momentum_model")
    return platform


def test_an_unreachable_server_gives_marked_counted_fallbacks_from_the_quant_model(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = llm_platform(platform_factory, f"http://127.0.0.1:{free_port()}", 5.0)
    before = fallbacks("unavailable")
    result = platform.materialize("momentum_forecasts", partition=DAY)

    rows = platform.table("momentum_forecasts")
    validate_forecasts(rows)
    assert rows.height == 48  # one symbol, 30-minute bars
    assert rows["fallback"].all()
    assert set(rows["backend"]) == {"lightgbm"}
    assert rows["rationale"].str.starts_with("fallback after LLM unavailable").all()
    assert rows["model_version"].str.starts_with("momentum-").all()
    assert fallbacks("unavailable") - before == rows.height
    meta = result.asset_materializations_for_node("momentum_forecasts")[0].metadata
    assert meta["configured_backend"].value == "llm_server"
    assert meta["fallback_rows"].value == rows.height
    assert meta["fallback_reasons"].value == {"unavailable": rows.height}


# Marked slow rather than llm: the llm marker is registered by tests/llm/conftest.py only.
@pytest.mark.llm
def test_a_real_vllm_server_answers_every_row_with_a_rationale_and_the_cache_replays_it(
    platform_factory: Callable[..., Platform],
    vllm_server: str,  # noqa: F811 (the fixture imported above)
) -> None:
    platform = llm_platform(platform_factory, vllm_server, 120.0)
    before = sum(fallbacks(r) for r in ("unavailable", "timeout", "invalid_answer"))
    result = platform.materialize("momentum_forecasts", partition=DAY)

    rows = platform.table("momentum_forecasts")
    validate_forecasts(rows)
    assert rows.height == 48
    assert set(rows["backend"]) == {"vllm"}
    assert not rows["fallback"].any()
    assert rows["rationale"].null_count() == 0
    assert rows["model_version"].str.starts_with(SERVED_MODEL).all()
    assert rows["p_up"].is_between(0, 1).all()
    after = sum(fallbacks(r) for r in ("unavailable", "timeout", "invalid_answer"))
    assert after == before
    meta = result.asset_materializations_for_node("momentum_forecasts")[0].metadata
    assert meta["backend"].value == "vllm" and meta["fallback_rows"].value == 0

    # Rematerialising the partition replays the cached answers: the same rows, no model call.
    cached = answers("cache")
    platform.materialize("momentum_forecasts", partition=DAY)
    assert platform.table("momentum_forecasts").equals(rows)
    assert answers("cache") - cached == rows.height
