"""The LLM forecast backend: prompts in, forecast rows out, the quantitative model as a safety net.

``LlmForecastBackend`` honours ``sapphire_domain.agents.forecast.ForecastBackend``. For each
feature row it builds the role's prompt, takes the answer from the cache or from the model (a
``vllm serve`` client or the offline engine, whichever is configured), and validates it. A row
whose answer timed out, could not be fetched or is invalid is answered by the agent's
quantitative backend instead: that row keeps the quantitative backend's name, has
``fallback=True`` and says why in ``rationale``, and ``sapphire_llm_fallbacks_total`` counts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl
from prometheus_client import Counter

from sapphire_domain.agents.forecast import (
    FORECAST_COLUMNS,
    ForecastBackend,
    ForecastContractError,
    conform,
    empty_forecasts,
)
from sapphire_domain.agents.specs import AgentSpec
from sapphire_llm.cache import AnswerCache, answer_key
from sapphire_llm.errors import LlmError
from sapphire_llm.prompts import PATH_BARS, PROMPT_VERSION, build_prompts
from sapphire_llm.schema import ANSWER_SCHEMA, AgentAnswer, Sampling, parse_answer

LLM_FALLBACKS = Counter(
    "sapphire_llm_fallbacks_total",
    "Forecast rows the quantitative backend answered because the LLM gave no usable answer.",
    ["agent", "reason"],
)
LLM_ANSWERS = Counter(
    "sapphire_llm_answers_total",
    "Valid LLM answers used in forecast rows, by where they came from (model or cache).",
    ["agent", "source"],
)


class AnswerSource(Protocol):
    """A model that answers prompts: ``VllmServerClient`` or ``OfflineEngine``."""

    @property
    def model_name(self) -> str: ...

    def answer_batch(self, prompts: Sequence[str], sampling: Sampling) -> list[str | LlmError]: ...


@dataclass
class LlmForecastBackend:
    """Attributes:
    source: where answers come from.
    fallback: the agent's quantitative backend, for rows the LLM could not answer.
    horizon: bars ahead that the forecast is for (written into the prompt and the rows).
    cache: answer store; without one every call asks the model.
    sampling: decoding settings (greedy by default, so answers repeat).
    headlines: recent news per symbol, shown to the sentiment role when present.
    """

    source: AnswerSource
    fallback: ForecastBackend
    horizon: int
    cache: AnswerCache | None = None
    sampling: Sampling = field(default_factory=Sampling)
    headlines: Mapping[str, Sequence[str]] | None = None
    name: str = "vllm"

    @property
    def model_version(self) -> str:
        return f"{self.source.model_name}@{PROMPT_VERSION}"

    def answers(self, agent: str, prompts: Sequence[str]) -> list[AgentAnswer | LlmError]:
        """A validated answer, or the reason there is none, per prompt; valid ones are cached."""
        model = self.source.model_name
        keys = [answer_key(p, model, self.sampling.as_dict(), ANSWER_SCHEMA) for p in prompts]
        texts: dict[str, str | LlmError] = dict(self.cache.get_many(keys)) if self.cache else {}
        LLM_ANSWERS.labels(agent, "cache").inc(sum(1 for k in keys if k in texts))
        # Each distinct missing prompt is asked once, in one batch.
        missing = {k: p for k, p in zip(keys, prompts, strict=True) if k not in texts}
        asked = self.source.answer_batch(list(missing.values()), self.sampling)
        fresh = dict(zip(missing, asked, strict=True))
        texts.update(fresh)

        results: list[AgentAnswer | LlmError] = []
        valid_fresh: dict[str, str] = {}
        for key in keys:
            text = texts[key]
            if isinstance(text, LlmError):
                results.append(text)
                continue
            try:
                results.append(parse_answer(text))
            except LlmError as error:
                results.append(error)
                continue
            if key in fresh:
                valid_fresh[key] = text
        LLM_ANSWERS.labels(agent, "model").inc(len(valid_fresh))
        if self.cache is not None:
            self.cache.put_many(valid_fresh)
        return results

    def forecast(self, agent: AgentSpec, features: pl.DataFrame) -> pl.DataFrame:
        needed = ["ts", "symbol", *agent.features]
        if PATH_BARS.get(agent.name):
            needed.append("ret_1")
        missing = [c for c in dict.fromkeys(needed) if c not in features.columns]
        if missing:
            raise ForecastContractError(f"{agent.name}: features lack columns {missing}")
        if features.is_empty():
            return empty_forecasts()

        prompts = build_prompts(
            agent.name,
            features,
            agent.features,
            self.horizon,
            role_text=agent.role,
            headlines=self.headlines,
        )
        results = self.answers(agent.name, prompts)
        ok = [i for i, r in enumerate(results) if isinstance(r, AgentAnswer)]
        failed = [i for i, r in enumerate(results) if isinstance(r, LlmError)]
        frames = []
        if ok:
            answers = [r for r in results if isinstance(r, AgentAnswer)]
            frames.append(
                features[ok]
                .select("ts", "symbol")
                .with_columns(
                    agent=pl.lit(agent.name),
                    model_version=pl.lit(self.model_version),
                    horizon=pl.lit(self.horizon, pl.Int64),
                    p_up=pl.Series([a.p_up for a in answers], dtype=pl.Float64),
                    expected_return=pl.Series(
                        [a.expected_return for a in answers], dtype=pl.Float64
                    ),
                    confidence=pl.Series([a.confidence for a in answers], dtype=pl.Float64),
                    backend=pl.lit(self.name),
                    rationale=pl.Series([a.why for a in answers], dtype=pl.String),
                    fallback=pl.lit(False),
                )
            )
        if failed:
            frames.append(self._fall_back(agent, features[failed], [results[i] for i in failed]))
        rows = pl.concat([conform(f) for f in frames]) if frames else empty_forecasts()
        return rows.select(FORECAST_COLUMNS).sort("ts", "symbol")

    def _fall_back(
        self, agent: AgentSpec, features: pl.DataFrame, errors: Sequence[object]
    ) -> pl.DataFrame:
        reasons = [e.reason if isinstance(e, LlmError) else "error" for e in errors]
        for reason in reasons:
            LLM_FALLBACKS.labels(agent.name, reason).inc()
        why = features.select("ts", "symbol").with_columns(
            _why=pl.Series(
                [f"fallback after LLM {r}: {e}"[:200] for r, e in zip(reasons, errors, strict=True)]
            )
        )
        rows = conform(self.fallback.forecast(agent, features))
        return (
            rows.join(why, on=["ts", "symbol"], how="left")
            .with_columns(
                rationale=pl.coalesce("_why", pl.lit("fallback after LLM error")),
                fallback=pl.lit(True),
            )
            .select(FORECAST_COLUMNS)
        )
