"""Shared fixtures: tiny random models of every supported architecture, a byte-level tokenizer
for them, and the real embedded SmolLM2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from laco.architectures import architecture_of
from laco.loading import LoadedModel, ModelSource

TINY_VOCAB = 260  # 256 bytes + specials


# Every family the generic rules are tested on; Baichuan runs as remote code (`baichuan_folder`).
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2", "granite", "baichuan"]


def tiny_config(model_type: str, n_layers: int = 8):
    import transformers as tf

    common = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=TINY_VOCAB, max_position_embeddings=256, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    if model_type == "llama":
        return tf.LlamaConfig(**common)
    if model_type == "mistral":
        return tf.MistralConfig(sliding_window=16, **common)
    if model_type == "qwen2":  # q/k/v biases; upper half of the layers use sliding attention
        return tf.Qwen2Config(use_sliding_window=True, sliding_window=16, max_window_layers=n_layers // 2, **common)
    if model_type == "qwen3":  # q_norm / k_norm
        return tf.Qwen3Config(head_dim=16, **common)
    if model_type == "gemma2":  # sliding and full layers alternate; four norms per layer; soft-capping
        return tf.Gemma2Config(head_dim=16, sliding_window=16, query_pre_attn_scalar=16, **common)
    if model_type == "gemma3_text":  # every 3rd layer full attention (layer_types); q/k norms; two rope bases
        return tf.Gemma3TextConfig(head_dim=16, sliding_window=16, sliding_window_pattern=3, query_pre_attn_scalar=16,
                                   **common)
    if model_type == "phi3":  # packed qkv_proj and gate_up_proj
        return tf.Phi3Config(**common)
    if model_type == "olmo2":  # norms after attention and MLP; q/k norms across all heads
        return tf.Olmo2Config(**common)
    if model_type == "granite":  # scalar multipliers on embeddings, residual branches, attention and logits
        return tf.GraniteConfig(embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.3,
                                logits_scaling=1.5, **common)
    raise ValueError(model_type)


def scale_weights(model, seed: int = 0):
    """Random weights scaled up so layers differ clearly from each other (norm scales left alone)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.08)
    return model.eval()


def tiny_model(model_type: str, n_layers: int = 8, seed: int = 0):
    """A random model whose weights are scaled up so layers differ clearly from each other."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    attention = "eager" if model_type == "gemma2" else "sdpa"  # transformers refuses sdpa for Gemma 2
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, n_layers), attn_implementation=attention)
    return scale_weights(model, seed)


def baichuan_folder(folder: Path, n_layers: int = 8, seed: int = 0) -> Path:
    """A Baichuan-2-style model folder that runs as remote code: this project's own minimal modelling
    files (tests/fixtures/baichuan), `auto_map` in config.json, seeded random weights."""
    import json
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True)
    for file in (Path(__file__).parent / "fixtures" / "baichuan").glob("*.py"):
        shutil.copy(file, folder / file.name)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "baichuan", "architectures": ["BaichuanForCausalLM"], "num_hidden_layers": n_layers,
        "auto_map": {"AutoConfig": "configuration_baichuan.BaichuanConfig",
                     "AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM"},
    }))
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    torch.manual_seed(seed)
    model = scale_weights(AutoModelForCausalLM.from_config(config, trust_remote_code=True), seed)
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def family_folder(model_type: str, folder: Path, n_layers: int = 8, seed: int = 0) -> Path:
    """A tiny random model of the family saved as a model folder, as a user would pass it."""
    if model_type == "baichuan":
        return baichuan_folder(folder, n_layers, seed)
    tiny_model(model_type, n_layers, seed).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens + <pad> <s> </s>) built from scratch, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_loaded(model_type: str, n_layers: int = 8, seed: int = 0) -> LoadedModel:
    model = tiny_model(model_type, n_layers, seed)
    source = ModelSource(f"tiny-{model_type}", "config", f"tiny-{model_type}-seed{seed}")
    return LoadedModel(model, byte_tokenizer(), source, architecture_of(model))


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    """A tiny Llama saved as a model folder, as a user would pass it to `laco prune`."""
    folder = tmp_path / "tiny-llama"
    loaded = tiny_loaded("llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct; load a fresh one per test with `smollm2()`."""
    from laco.loading import load_model

    try:
        load_model("smollm2-135m")
    except Exception as exc:  # the package is installed by tox; say so when it is missing
        pytest.skip(f"embedded SmolLM2 unavailable: {exc}")
    return lambda: load_model("smollm2-135m")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("LACO_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (path / "MANIFEST.md").is_file():
        pytest.skip(f"evaluation data not found at {path} (set LACO_DATA_DIR)")
    return path


@pytest.fixture(autouse=True)
def own_results_cache(tmp_path_factory, monkeypatch):
    """Every test starts with an empty shared result cache of its own (bench.results_cache), never the
    user's; the processes a test starts inherit it."""
    monkeypatch.setenv("LACO_RESULTS_CACHE", str(tmp_path_factory.mktemp("results-cache")))
