"""An OpenAI-compatible HTTP client for ``vllm serve``, the production path (GPU nodes).

Requests carry vLLM's ``structured_outputs`` parameter (a JSON schema) in the body, which the
server applies to decoding; an OpenAI server would ignore it, which is why answers are validated
again on arrival. Every failure is raised as an ``LlmError`` whose ``reason`` the backend counts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from sapphire_llm.errors import LlmError, LlmTimeoutError, LlmUnavailableError
from sapphire_llm.schema import ANSWER_SCHEMA, Sampling


@dataclass
class VllmServerClient:
    """Attributes:
    base_url: the server's root, e.g. ``http://127.0.0.1:8000`` (``/v1`` is added).
    model: the served model name (``--served-model-name``, else the path it was started with).
    api: ``chat`` (``/v1/chat/completions``, the model's chat template applies) or
        ``completions`` (``/v1/completions``, the prompt as is).
    timeout_s: limit on one request, connecting included; past it the answer is a timeout.
    concurrency: requests in flight at once in ``answer_batch``; the server batches them.
    api_key_env: environment variable holding the server's API key, if it has one.
    """

    base_url: str
    model: str
    api: Literal["chat", "completions"] = "chat"
    timeout_s: float = 30.0
    concurrency: int = 16
    api_key_env: str = "SAPPHIRE_VLLM_API_KEY"
    _http: httpx.Client | None = field(default=None, init=False, repr=False)

    @property
    def model_name(self) -> str:
        return self.model

    def _client(self) -> httpx.Client:
        if self._http is None:
            headers = {}
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._http = httpx.Client(
                base_url=self.base_url.rstrip("/"),
                timeout=httpx.Timeout(self.timeout_s),
                headers=headers,
                limits=httpx.Limits(max_connections=max(self.concurrency, 1)),
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> VllmServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def healthy(self) -> bool:
        """Whether the server answers ``/health`` with 200."""
        try:
            return self._client().get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def _body(self, prompt: str, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            **sampling.as_dict(),
            "structured_outputs": {"json": ANSWER_SCHEMA, "disable_any_whitespace": True},
        }
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def answer(self, prompt: str, sampling: Sampling) -> str:
        """The answer text for one prompt, or LlmTimeoutError / LlmUnavailableError."""
        path = "/v1/chat/completions" if self.api == "chat" else "/v1/completions"
        try:
            response = self._client().post(path, json=self._body(prompt, sampling))
        except httpx.TimeoutException as error:
            message = f"no answer from {self.base_url} within {self.timeout_s} s"
            raise LlmTimeoutError(message) from error
        except httpx.HTTPError as error:
            message = f"{self.base_url} unreachable: {type(error).__name__}"
            raise LlmUnavailableError(message) from error
        if response.status_code != 200:
            raise LlmUnavailableError(
                f"{self.base_url} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"] if self.api == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise LlmUnavailableError(
                f"{self.base_url} sent a malformed completion: {error!r}"
            ) from error
        return str(text or "")

    def _answer_or_error(self, prompt: str, sampling: Sampling) -> str | LlmError:
        try:
            return self.answer(prompt, sampling)
        except LlmError as error:
            return error

    def answer_batch(self, prompts: Sequence[str], sampling: Sampling) -> list[str | LlmError]:
        """One answer (or the error in its place) per prompt, ``concurrency`` requests at a time."""
        if self.concurrency <= 1 or len(prompts) <= 1:
            return [self._answer_or_error(p, sampling) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._answer_or_error(p, sampling), prompts))
