"""The plan of a run (bench.plan): `laco bench --plan` prints a row per model and step and writes nothing;
every run prints it first and refuses, in one line with nothing written, pruned copies that its disk
cannot hold; a prune's planned memory is its method's formula."""

from __future__ import annotations

import os
import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from laco.cli import main
from laco.memory import format_size
from run_fixtures import TWO_DEPTH_METHODS

PROFILE = """measurements = ["perplexity", "memory", "pruning_time"]
[model]
spec = "{spec}"
""" + TWO_DEPTH_METHODS + """[perplexity]
window = 16
n_windows = 2
batch_size = 1
lm_eval_wikitext = false
"""
EXPECTED_ROWS = [("dense", "perplexity"), ("dense", "memory"),
                 ("shortgpt", "prune"), ("shortgpt", "perplexity"), ("shortgpt", "memory"), ("shortgpt", "pruning_time"),
                 ("drop", "prune"), ("drop", "perplexity"), ("drop", "memory"), ("drop", "pruning_time")]


def state(folder: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            st = Path(dirpath, name).lstat()
            out[str(Path(dirpath, name).relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def table_rows(out: str) -> list[list[str]]:
    """The plan table's rows (model, step, memory, disk, FLOPs, time), the totals row last."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model ")) + 2
    end = next(i for i, line in enumerate(lines) if line.startswith("total")) + 1
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:end]]


@pytest.fixture
def work(tmp_path, tiny_folder, monkeypatch):
    (tmp_path / "p.toml").write_text(PROFILE.format(spec=tiny_folder))
    monkeypatch.chdir(tmp_path)

    def no_weights(*args, **kwargs):
        raise AssertionError("the plan loaded weights")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_weights)
    return tmp_path


def dense_weight_bytes(folder: Path) -> int:
    """Every parameter of the saved tiny model (a tied head once) in float32."""
    from safetensors import safe_open

    import math

    with safe_open(folder / "model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys()) * 4


def test_plan_prints_a_row_per_model_and_step_and_writes_nothing(work, tiny_folder, capsys):
    before = state(work)
    assert main(["bench", "--plan", "--profile", "p.toml", "--out", "run", "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [tuple(r[:2]) for r in rows[:-1]] == EXPECTED_ROWS
    assert not (work / "run").exists() and state(work) == before
    assert not any(Path(os.environ["LACO_RESULTS_CACHE"]).iterdir())
    copy = format_size(int(dense_weight_bytes(tiny_folder) * 0.75))  # drop matches shortgpt's 25%
    assert [r[3] for r in rows if r[1] == "prune"] == [copy, copy]
    assert rows[-1][3] == format_size(2 * int(dense_weight_bytes(tiny_folder) * 0.75))
    assert all(r[4] != "?" and r[5] != "?" for r in rows), out
    assert re.search(r"^bounds: memory .* \(this machine's memory\); disk .* free at " + re.escape(str(work)) + "$", out,
                     re.M)


def test_pruned_copies_beyond_the_free_disk_are_refused_in_one_line(work, tiny_folder, monkeypatch, capfd):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    before = state(work)
    assert main(["bench", "--profile", "p.toml", "--out", "run", "--quiet"]) == 2
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    need = format_size(2 * int(dense_weight_bytes(tiny_folder) * 0.75))
    assert lines == [f"laco bench: error: this profile needs {need} of disk for pruned copies, 1 kB free at {work}"]
    assert captured.out.startswith("model ")  # the plan came first
    assert not (work / "run").exists() and state(work) == before


def test_a_prunes_planned_memory_is_its_formula(work, tiny_folder):
    """ShortGPT's formula (laco.baselines.shortgpt.peak_memory), written out on the tiny model: its weights,
    the calibration states (three hidden states in float32 here, two float32 for the cosines) and one layer's
    forward (the MLP's three intermediates, six hidden-sized tensors, float32 attention scores)."""
    from bench.plan import make_plan
    from bench.profile import load_profile
    from conftest import tiny_loaded
    from laco.calibration import load_calibration, tokenize

    _, profile = load_profile("p.toml")
    step = next(s for s in make_plan(profile, work / "run", None).steps if (s.model, s.step) == ("shortgpt", "prune"))
    loaded = tiny_loaded("llama")
    config = loaded.model.config
    batch, seq = tokenize(loaded.tokenizer, load_calibration(None)[0])["input_ids"].shape
    tokens = batch * seq
    weights = sum(p.numel() for p in loaded.model.parameters()) * 4
    states = 3 * tokens * config.hidden_size * 4 + 2 * tokens * config.hidden_size * 4
    forward = (tokens * (3 * config.intermediate_size + 6 * config.hidden_size) * 4
               + batch * config.num_attention_heads * seq * seq * 4)
    assert step.memory == weights + states + forward
    assert weights == dense_weight_bytes(tiny_folder)


def test_a_run_that_removes_copies_once_read_plans_the_most_at_once(work, tiny_folder, capsys):
    """keep_pruned_weights = "while-measured": no later step reads either copy (pruning time prunes the dense
    model again), so one copy is on disk at a time; the total is one copy, not two, and the plan says why."""
    (work / "p.toml").write_text(PROFILE.format(spec=tiny_folder) + '[run]\nkeep_pruned_weights = "while-measured"\n')
    assert main(["bench", "--plan", "--profile", "p.toml", "--out", "run", "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    copy = format_size(int(dense_weight_bytes(tiny_folder) * 0.75))
    assert [r[3] for r in rows if r[1] == "prune"] == [copy, copy]
    assert rows[-1][3] == f"{copy} (at once)"
    assert re.search(r'keep_pruned_weights = "while-measured" removes each pruned copy .*not their sum \(shortgpt\)', out)


def test_a_hub_model_not_on_this_machine_is_sized_from_its_written_down_shape(work, capsys):
    """meta-llama/Llama-2-7b-hf is not here (offline, not in the hub cache): its shape comes from
    laco/data/synthetic_models.toml's entry naming it, so the plan states its weights, memory and FLOPs."""
    (work / "hub.toml").write_text('measurements = ["memory", "flops"]\n[model]\nspec = "meta-llama/Llama-2-7b-hf"\n'
                                   'dtype = "float16"\ndevice = "cuda"\n')
    assert main(["bench", "--plan", "--profile", "hub.toml", "--out", "run", "--quiet"]) == 0
    out = capsys.readouterr().out
    # Llama 2 7B: 32 layers of width 4096 (four 4096 x 4096 attention projections, three 4096 x 11008 MLP
    # matrices, two norms), 32,000-token embeddings and an untied head, a final norm: 6.74e9 parameters
    hidden, mlp, layers, vocab = 4096, 11008, 32, 32000
    params = 2 * vocab * hidden + layers * (4 * hidden * hidden + 3 * hidden * mlp + 2 * hidden) + hidden
    assert round(params / 1e9, 2) == 6.74
    assert f"- weights: {params:,} parameters x 2 B (float16) = {format_size(2 * params)}; the shape is " \
           "laco/data/synthetic_models.toml [llama2-7b] (meta-llama/Llama-2-7b-hf's config written down)" in out
    assert format_size(2 * params) == "13.5 GB"
    memory = next(r for r in table_rows(out) if r[:2] == ["dense", "memory"])
    assert memory[2] != "?" and memory[4] != "?", out
    assert "the model's config is not read here" not in out


def test_a_model_not_converted_yet_is_planned_with_its_figures_unread(work, monkeypatch, capsys):
    """The embedded GGUF on a fresh machine: no converted folder and no written-down shape, so every
    FLOP-counted step, the throughput phase's rounds included, reads "?" and the plan still prints."""
    monkeypatch.setattr("bench.model_files.prepared_folder", lambda spec, revision: None)
    (work / "gguf.toml").write_text('measurements = ["perplexity", "memory", "throughput_hf"]\n[model]\n'
                                    'spec = "smollm2-135m"\n[perplexity]\nlm_eval_wikitext = false\n')
    assert main(["bench", "--plan", "--profile", "gguf.toml", "--out", "run", "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = {r[1]: r for r in table_rows(out) if r[0] == "dense"}
    assert sorted(rows) == ["memory", "perplexity", "throughput_hf"]
    assert all(row[4] == "?" for row in rows.values()), out
    assert "the model's config is not read here (no local folder yet" in out


def test_an_accuracy_items_tokens_come_from_its_line_in_the_data_file(work, tmp_path):
    """Two piqa items of 400 and 800 bytes: 150 tokens each on average at 4 characters a token, so the plan
    counts two forwards of 150 tokens (the model's own FLOP count, independent of the plan)."""
    from bench.flops import count_flops
    from bench.plan import Sizing
    from bench.profile import parse_profile
    from laco.config import tomllib

    data = tmp_path / "data"
    (data / "piqa").mkdir(parents=True)
    (data / "piqa" / "validation.jsonl").write_bytes(b"x" * 399 + b"\n" + b"y" * 799 + b"\n" + b"z" * 99 + b"\n")
    text = PROFILE.format(spec=work.joinpath("p.toml").read_text().split('spec = "')[1].split('"')[0])
    profile = parse_profile({**tomllib.loads(text), "accuracy": {"tasks": {"piqa": {"limit": 2}}}})
    sizing = Sizing(profile, str(data), [], {})
    assert sizing.item_tokens("piqa", 2) == (150.0, 2)
    expected = 2 * count_flops(sizing.meta, 1, 150, 1)["prefill"]["flops"]
    assert sizing.workload_flops("accuracy") == expected
    assert Sizing(profile, None, [], {}).item_tokens("piqa", 2) == (512, 2)  # no data file: the assumed 512


SYNTHETIC = """measurements = ["flops"]
[model]
spec = "synthetic:llama2-7b"
dtype = "bfloat16"
bf16_fallback = "keep"
"""


def test_a_synthetic_model_not_built_yet_is_planned_as_a_build_and_its_disk_checked(tmp_path, monkeypatch, capfd):
    """Llama-2-7B's shape in bf16: 6,738,415,616 parameters x 2 B written to the cache by the first load; where
    the cache and the run folder share a disk and it cannot hold them, the run is refused in one line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LACO_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "s.toml").write_text(SYNTHETIC)
    assert main(["bench", "--plan", "--profile", "s.toml", "--out", "run", "--quiet"]) == 0
    out = capfd.readouterr().out
    rows = table_rows(out)
    assert rows[0][:2] == ["dense", "build"] and rows[0][3] == format_size(6_738_415_616 * 2) and rows[0][5] != "?"
    assert f"to {tmp_path / 'cache' / 'synthetic'}" in out
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 10**9, 10**9))
    assert main(["bench", "--profile", "s.toml", "--out", "run", "--quiet"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"laco bench: error: this profile needs 13.5 GB of disk for pruned copies and 13.5 GB for its "
                   f"synthetic model, 1 GB free at {tmp_path}"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache" / "synthetic").exists()
