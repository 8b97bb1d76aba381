"""An LLM agent's answer: a pydantic model, and the JSON schema that constrains its decoding.

One answer shape serves every role; the role lives in the prompt. The shape is chosen for guided
decoding, where every output token costs a scheduling step:
- short keys, and integers (percent, basis points) rather than floats, whose digits are unbounded;
- the rationale is a bounded run of plain ASCII with no quotes or backslashes, so it needs no
  escaping and its length in characters bounds its length in tokens. Its bound is short (48
  characters, "RSI 71, MACD turning down" is 25): a weak model writes up to the bound, and the
  rationale is most of an answer's tokens, so the bound sets the decode steps of a whole batch.
Together they bound the answer's length, which sets ``max_tokens`` (a truncated answer is invalid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sapphire_llm.errors import InvalidAnswerError

RATIONALE_MAX_CHARS = 48
# Letters, digits and a little punctuation: enough for "RSI 71, MACD turning down" and no escapes.
RATIONALE_PATTERN = rf"^[A-Za-z0-9 ,.;:%+/()=<>-]{{0,{RATIONALE_MAX_CHARS}}}$"
# A forecast of more than 10% over a few bars is an error, not a view.
MAX_RETURN_BP = 1000


class AgentAnswer(BaseModel):
    """One agent's view of one symbol at one time.

    Attributes:
        up_pct: chance, in percent, that the log return over the horizon is positive.
        ret_bp: expected log return over the horizon, in basis points.
        conf_pct: how much the agent trusts this view, in percent.
        why: a short rationale, shown beside the forecast row.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    up_pct: int = Field(ge=0, le=100)
    ret_bp: int = Field(ge=-MAX_RETURN_BP, le=MAX_RETURN_BP)
    conf_pct: int = Field(ge=0, le=100)
    why: str = Field(max_length=RATIONALE_MAX_CHARS, pattern=RATIONALE_PATTERN)

    @property
    def p_up(self) -> float:
        return self.up_pct / 100.0

    @property
    def expected_return(self) -> float:
        return self.ret_bp / 10_000.0

    @property
    def confidence(self) -> float:
        return self.conf_pct / 100.0


def answer_json_schema() -> dict[str, Any]:
    """The schema handed to vLLM's structured outputs, written out rather than taken from
    pydantic so that it carries only what the grammar needs (no titles, one length bound)."""
    percent = {"type": "integer", "minimum": 0, "maximum": 100}
    return {
        "type": "object",
        "properties": {
            "up_pct": percent,
            "ret_bp": {"type": "integer", "minimum": -MAX_RETURN_BP, "maximum": MAX_RETURN_BP},
            "conf_pct": percent,
            "why": {"type": "string", "pattern": RATIONALE_PATTERN},
        },
        "required": ["up_pct", "ret_bp", "conf_pct", "why"],
        "additionalProperties": False,
    }


ANSWER_SCHEMA = answer_json_schema()


def longest_answer_chars() -> int:
    """Characters in the longest compact answer the schema allows."""
    widest = AgentAnswer(
        up_pct=100, ret_bp=-MAX_RETURN_BP, conf_pct=100, why="x" * RATIONALE_MAX_CHARS
    )
    return len(json.dumps(widest.model_dump(), separators=(",", ":")))


# A token is at least one byte and the schema admits only ASCII, so this many tokens always suffice
# for a complete answer; the margin covers a tokenizer that splits the end-of-text marker.
ANSWER_MAX_TOKENS = longest_answer_chars() + 8


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by both modes; they are part of the cache key.

    Attributes:
        temperature: 0 is greedy, so a model answers the same prompt the same way.
        max_tokens: upper bound on answer tokens; the default always fits a complete answer.
        seed: sampling seed, for temperatures above 0.
    """

    temperature: float = 0.0
    max_tokens: int = ANSWER_MAX_TOKENS
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}


def parse_answer(text: str) -> AgentAnswer:
    """The answer in ``text``, or InvalidAnswerError saying why it is not one."""
    try:
        return AgentAnswer.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "answer"
        raise InvalidAnswerError(f"{where}: {first['msg']} (answer {text[:80]!r})") from None
