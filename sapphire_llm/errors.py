"""Why an LLM answer could not be used; each ``reason`` is a label of the fallback metric."""

from __future__ import annotations

from sapphire_domain.errors import SapphireError


class LlmError(SapphireError):
    """A model gave no usable answer; the backend falls back and counts ``reason``."""

    reason = "error"


class LlmTimeoutError(LlmError):
    """The server did not answer within the client's time limit."""

    reason = "timeout"


class LlmUnavailableError(LlmError):
    """The server could not be reached, or answered with an HTTP error."""

    reason = "unavailable"


class InvalidAnswerError(LlmError):
    """The model's text is not JSON, or breaks the answer schema."""

    reason = "invalid_answer"


class EngineFailureError(LlmError):
    """The in-process engine raised while generating."""

    reason = "engine_error"
