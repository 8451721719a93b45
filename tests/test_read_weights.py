"""A lazy (memory-mapped) load leaves the weights on disk until first touched; `laco.loading.read_weights`
reads them in before a pruner's clock starts, so that neither its seconds nor its peak depends on it."""

from __future__ import annotations

import psutil
import torch

from conftest import tiny_loaded
from laco.loading import load_model, read_weights


def test_reading_the_weights_brings_every_page_of_a_mapped_load_into_memory(tmp_path):
    """A 222 MB float32 model: after its load and `read_weights` the process holds at least 90% of its
    bytes more than before the load (a load that maps the file adds a few MB; a no-op read adds nothing)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=8, vocab_size=2048)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path)
    weights = sum(p.numel() * 4 for p in model.parameters())
    expected = {name: p.detach().clone() for name, p in model.named_parameters()}
    del model
    tiny_loaded("llama").tokenizer.save_pretrained(tmp_path)
    process = psutil.Process()
    before = process.memory_info().rss
    loaded = load_model(str(tmp_path))
    read_weights(loaded.model)
    assert process.memory_info().rss - before >= 0.9 * weights
    assert all(torch.equal(p, expected[name]) for name, p in loaded.model.named_parameters())  # nothing changed


def test_buffers_are_read_too(tmp_path):
    """A 64 MB buffer mapped from a file (as a lazy load maps a saved buffer) is in memory after
    `read_weights`: a module whose only tensor is a buffer gains at least 90% of its bytes."""
    path = tmp_path / "buffer.bin"
    n = 16 * 2**20
    path.write_bytes(bytes(4 * n))
    module = torch.nn.Module()
    module.register_buffer("mapped", torch.from_file(str(path), shared=True, size=n, dtype=torch.float32))
    process = psutil.Process()
    before = process.memory_info().rss
    read_weights(module)
    assert process.memory_info().rss - before >= 0.9 * 4 * n


def test_a_pruner_reads_the_weights_before_its_clock(monkeypatch):
    """`laco.pruners.measured` reads the model's weights once, before it starts the step's peak memory
    (and so before the pruner, whose own clock starts inside it)."""
    from laco.memory import PeakMemory
    from laco.pruners import get_pruner

    events = []

    class Recorded(PeakMemory):
        def __enter__(self):
            events.append("peak starts")
            return super().__enter__()

    monkeypatch.setattr("laco.loading.read_weights", lambda model: events.append(("read", model)))
    monkeypatch.setattr("laco.memory.PeakMemory", Recorded)
    loaded = tiny_loaded("llama", 4)
    get_pruner("shortgpt")(loaded, ["a sentence to calibrate on."], target_layers=3, progress=False)
    assert events == [("read", loaded.model), "peak starts"]
