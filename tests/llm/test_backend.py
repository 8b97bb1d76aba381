"""The LLM backend's failure handling, cache and prompts, with no engine behind it.

Unreachable and silent servers are real sockets on loopback; scripted answers stand in for a model
whose text is not JSON. These run without vLLM installed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import pytest
from prometheus_client import REGISTRY

from sapphire_domain.agents.forecast import ForecastContractError, validate_forecasts
from sapphire_domain.agents.specs import AGENTS
from sapphire_llm.backend import LlmForecastBackend
from sapphire_llm.cache import AnswerCache, answer_key
from sapphire_llm.errors import InvalidAnswerError, LlmError
from sapphire_llm.prompts import build_prompts
from sapphire_llm.schema import (
    ANSWER_MAX_TOKENS,
    ANSWER_SCHEMA,
    RATIONALE_MAX_CHARS,
    Sampling,
    longest_answer_chars,
    parse_answer,
)
from sapphire_llm.server_client import VllmServerClient
from tests.llm.conftest import free_port
from tests.llm.stubs import ConstantBackend, CountingSource, feature_frame

GOOD = '{"up_pct":61,"ret_bp":12,"conf_pct":40,"why":"RSI rising, MACD above signal"}'


class ScriptedSource:
    """Answers every prompt with the texts given, in turn."""

    model_name = "scripted"

    def __init__(self, *texts: str) -> None:
        self.texts = texts

    def answer_batch(self, prompts: Sequence[str], sampling: Sampling) -> list[str | LlmError]:
        return [self.texts[i % len(self.texts)] for i in range(len(prompts))]


def fallbacks(agent: str, reason: str) -> float:
    labels = {"agent": agent, "reason": reason}
    return REGISTRY.get_sample_value("sapphire_llm_fallbacks_total", labels) or 0.0


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback socket that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_an_unreachable_server_makes_every_row_a_counted_fallback() -> None:
    features = feature_frame(bars=2)
    client = VllmServerClient(f"http://127.0.0.1:{free_port()}", "m", timeout_s=5.0)
    backend = LlmForecastBackend(client, ConstantBackend(), horizon=4)
    before = fallbacks("momentum", "unavailable")
    rows = backend.forecast(AGENTS["momentum"], features)
    assert rows.height == features.height
    assert rows["fallback"].all()
    assert rows["rationale"].str.starts_with("fallback after LLM unavailable").all()
    assert fallbacks("momentum", "unavailable") - before == features.height
    validate_forecasts(rows)


def test_a_server_that_never_answers_times_out_into_a_fallback(silent_server: str) -> None:
    features = feature_frame(symbols=("BTC/USDT",), bars=2)
    client = VllmServerClient(silent_server, "m", timeout_s=0.5, concurrency=2)
    backend = LlmForecastBackend(client, ConstantBackend(), horizon=4)
    before = fallbacks("sentiment", "timeout")
    rows = backend.forecast(AGENTS["sentiment"], features)
    assert rows["fallback"].all()
    assert rows["rationale"].str.starts_with("fallback after LLM timeout").all()
    assert fallbacks("sentiment", "timeout") - before == features.height


def test_text_that_is_not_json_falls_back_and_only_the_failed_rows_go_to_the_quant_model() -> None:
    features = feature_frame(symbols=("BTC/USDT",), bars=4)
    quant = ConstantBackend()
    backend = LlmForecastBackend(ScriptedSource(GOOD, "I think it goes up"), quant, horizon=4)
    rows = backend.forecast(AGENTS["momentum"], features)
    assert rows["fallback"].to_list() == [False, True, False, True]
    assert rows["backend"].to_list() == ["vllm", "quant-stub", "vllm", "quant-stub"]
    assert quant.rows_asked == [2]
    llm = rows.filter(~pl.col("fallback")).row(0, named=True)
    assert (llm["p_up"], llm["expected_return"], llm["confidence"]) == (0.61, 0.0012, 0.40)
    assert llm["rationale"] == "RSI rising, MACD above signal"


@pytest.mark.parametrize(
    "text",
    [
        '{"up_pct":101,"ret_bp":0,"conf_pct":5,"why":"x"}',
        '{"up_pct":50,"ret_bp":0,"conf_pct":5}',
        '{"up_pct":50,"ret_bp":0,"conf_pct":5,"why":"x","extra":1}',
        '{"up_pct":50,"ret_bp":0,"conf_pct":5,"why":"' + "x" * (RATIONALE_MAX_CHARS + 1) + '"}',
        '{"up_pct":50,"ret_bp":0,"conf_pct":5,"why":"say \\"buy\\""}',
        '{"up_pct":50,"ret_bp":0,',
    ],
)
def test_answers_outside_the_schema_are_rejected_with_a_reason(text: str) -> None:
    with pytest.raises(InvalidAnswerError):
        parse_answer(text)


def test_max_tokens_always_fits_the_longest_answer_the_schema_allows() -> None:
    assert longest_answer_chars() < ANSWER_MAX_TOKENS


def test_the_cache_key_changes_with_prompt_model_sampling_and_schema() -> None:
    base = answer_key("p", "m", Sampling().as_dict(), ANSWER_SCHEMA)
    assert base == answer_key("p", "m", Sampling().as_dict(), ANSWER_SCHEMA)
    assert base != answer_key("q", "m", Sampling().as_dict(), ANSWER_SCHEMA)
    assert base != answer_key("p", "n", Sampling().as_dict(), ANSWER_SCHEMA)
    assert base != answer_key("p", "m", Sampling(temperature=0.7).as_dict(), ANSWER_SCHEMA)
    assert base != answer_key("p", "m", Sampling().as_dict(), {**ANSWER_SCHEMA, "required": []})


def test_a_cached_partition_is_answered_without_asking_the_model(tmp_path: Path) -> None:
    features = feature_frame(bars=3)
    source = CountingSource(ScriptedSource(GOOD))
    cache = AnswerCache(tmp_path / "answers.sqlite")
    first = LlmForecastBackend(source, ConstantBackend(), horizon=4, cache=cache).forecast(
        AGENTS["momentum"], features
    )
    # A new backend over the same store: a rematerialisation in another run.
    second = LlmForecastBackend(source, ConstantBackend(), horizon=4, cache=cache).forecast(
        AGENTS["momentum"], features
    )
    assert source.batches == [features.height, 0]
    assert second.equals(first)


def test_missing_feature_columns_are_named_in_the_error() -> None:
    backend = LlmForecastBackend(ScriptedSource(GOOD), ConstantBackend(), horizon=4)
    with pytest.raises(ForecastContractError, match="rsi"):
        backend.forecast(AGENTS["momentum"], feature_frame().drop("rsi"))


def test_each_role_gets_its_own_prompt_with_its_features() -> None:
    features = feature_frame(symbols=("BTC/USDT",), bars=3)
    prompts = {
        name: build_prompts(name, features, agent.features, 4, role_text=agent.role)[-1]
        for name, agent in AGENTS.items()
    }
    assert len(set(prompts.values())) == len(AGENTS)
    assert "funding_rate=" in prompts["sentiment"]
    assert "cs_spread=" in prompts["microstructure"]
    assert "last 1-bar returns" in prompts["timeseries"]


def test_a_prompt_reads_nothing_after_its_own_row() -> None:
    features = feature_frame(symbols=("BTC/USDT", "ETH/USDT"), bars=10)
    cut = features["ts"].sort()[5]
    past = features.filter(pl.col("ts") <= cut)
    # Rewrite every later row: the prompts up to the cut must not change.
    future = features.with_columns(
        pl.when(pl.col("ts") > cut)
        .then(pl.col("ret_1") * 100)
        .otherwise(pl.col("ret_1"))
        .alias("ret_1")
    )
    spec = AGENTS["timeseries"]
    on_past = build_prompts("timeseries", past, spec.features, 4)
    on_all = build_prompts("timeseries", future, spec.features, 4)
    assert on_all[: past.height] == on_past


def test_headlines_are_shown_to_the_sentiment_role_for_their_symbol() -> None:
    features = feature_frame(symbols=("BTC/USDT", "ETH/USDT"), bars=1)
    prompts = build_prompts(
        "sentiment",
        features,
        AGENTS["sentiment"].features,
        4,
        headlines={"ETH/USDT": ["ETF inflows hit a record"]},
    )
    assert "ETF inflows" not in prompts[0]
    assert "headlines: ETF inflows hit a record" in prompts[1]
