"""A tiny Llama-architecture model built on this machine, for exercising the real vLLM engine.

Nothing is downloaded: the tokenizer is trained here on a small corpus of prompts and answers, the
config is written by hand, and vLLM fills the weights at random (``load_format="dummy"``). Its
answers are noise, but they pass through the real engine, batching and guided decoding.

Shape: hidden size 128 with 2 heads of 64 (vLLM's CPU attention rejects smaller heads, 16 was
seen to fail), 2 layers. Run ``python -m sapphire_llm.tiny_model DIR`` in the LLM virtualenv.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from sapphire_llm.schema import RATIONALE_MAX_CHARS

# Bump when the recipe changes, so that a cached folder is rebuilt.
RECIPE = "tiny-llama-2"  # 2: prompts state the 48-character rationale bound
VOCAB_SIZE = 600
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
# Role and message prefixes; kept plain so that chat and completion prompts tokenise alike.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def _corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """Text shaped like the prompts and answers, so that keys and numbers become few tokens."""
    from sapphire_domain.agents.specs import AGENTS
    from sapphire_llm.prompts import render_prompt

    rng = random.Random(seed)
    words = ["RSI", "MACD", "trend", "spread", "funding", "volume", "flow", "up", "down", "flat"]
    corpus = []
    for i in range(lines):
        agent = AGENTS[sorted(AGENTS)[i % len(AGENTS)]]
        values = {name: round(rng.uniform(-2, 2), 4) for name in agent.features}
        path = [round(rng.uniform(-80, 80), 1) for _ in range(i % 9)]
        corpus.append(render_prompt(agent.name, "BTC/USDT", "2026-01-01T00:00", 4, values, path))
        why = " ".join(rng.choice(words) for _ in range(6))[:RATIONALE_MAX_CHARS]
        answer = {"up_pct": rng.randint(0, 100), "ret_bp": rng.randint(-300, 300),
                  "conf_pct": rng.randint(0, 100), "why": why}  # fmt: skip
        corpus.append(json.dumps(answer, separators=(",", ":")))
    return corpus


def build_tiny_model(folder: Path) -> Path:
    """Writes config and tokenizer files into ``folder`` (once per recipe) and returns it."""
    marker = folder / "sapphire-recipe.txt"
    if marker.exists() and marker.read_text() == RECIPE:
        return folder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        # Every byte stays spellable, so guided decoding can always emit what the schema allows.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size()
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
    }
    model_config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
        "torch_dtype": "bfloat16",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"})
    )
    (folder / "config.json").write_text(json.dumps(model_config, indent=1))
    marker.write_text(RECIPE)
    return folder


if __name__ == "__main__":
    print(build_tiny_model(Path(sys.argv[1])))
