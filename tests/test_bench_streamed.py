"""`[model] max_memory` in a profile: a prune whose resident figure exceeds the bound runs layer by layer
(bench.streamed), as `laco prune --max-memory` does, and makes the weights the resident prune makes (the
searches' streamed decisions: tests/test_streaming.py; on the tiny model their streamed figure is the larger); the
plan marks it and the pruning-time phase prunes it again the same way; a bad size or a GPU is refused."""

from __future__ import annotations

import json
import re

import pytest
import torch

from laco.cli import main
from test_streaming import tensors

PROFILE = """measurements = ["flops", "pruning_time"]
[model]
spec = "{spec}"
{bound}
[[methods]]
name = "{method}"
target = 0.25
"""


def between_the_figures(folder, method: str) -> int:
    """A bound above the method's streamed figure and below its resident one on the tiny model (the
    interpreter counted as nothing: the test patches it out of the plan)."""
    from laco.calibration import load_calibration
    from laco.memory import LAYER_CACHE
    from laco.pruners import memory_need
    from laco.stream.plan import model_shape

    shape = model_shape(str(folder), "float32", load_calibration(None)[0])
    resident = sum(memory_need(method, shape, streamed=False, target_ratio=0.25).values())
    streamed = sum(size for part, size in memory_need(method, shape, streamed=True, target_ratio=0.25).items()
                   if part != LAYER_CACHE) + shape.largest_tensor_params * shape.dtype_bytes  # and one tensor being read
    bound = (resident + streamed) // 2
    assert streamed < bound < resident
    return bound


def run(work, folder, method: str, bound_line: str, out: str) -> dict:
    (work / f"{out}.toml").write_text(PROFILE.format(spec=folder, bound=bound_line, method=method))
    assert main(["bench", "--profile", f"{out}.toml", "--out", out, "--quiet"]) == 0
    return json.loads((work / out / "models" / f"{method}.json").read_text())


@pytest.mark.parametrize("method", ["shortgpt", "rule-merge"])  # a search holds more streamed here
def test_a_bound_below_the_resident_figure_prunes_layer_by_layer_to_the_same_weights(tmp_path, tiny_folder, monkeypatch,
                                                                                  capsys, method):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("laco.stream.plan.rss_now", lambda: 0)
    from bench import streamed as streamed_module

    bound = between_the_figures(tiny_folder, method)
    again = []
    prune_seconds = streamed_module.prune_seconds
    monkeypatch.setattr(streamed_module, "prune_seconds", lambda *a, **k: again.append(1) or prune_seconds(*a, **k))
    resident = run(tmp_path, tiny_folder, method, "", "resident")
    assert again == []
    streamed = run(tmp_path, tiny_folder, method, f'max_memory = "{bound}"', "streamed")
    assert len(again) == 3  # the pruning-time phase's three repeats, layer by layer as the run pruned
    assert streamed["record"]["memory"]["streamed"] is True and streamed["record"]["memory"]["layer_reads"] > 0
    assert not resident["record"].get("memory")
    expected, got = tensors(tmp_path / "resident" / "weights" / method), tensors(tmp_path / "streamed" / "weights" / method)
    assert sorted(got) == sorted(expected) and all(torch.equal(got[name], expected[name]) for name in expected)
    assert streamed["record"]["n_layers_after"] == resident["record"]["n_layers_after"] < 8
    for folder in ("resident", "streamed"):  # the pruning-time phase pruned it again, each its own way
        timed = json.loads((tmp_path / folder / "results" / method / "pruning_time.json").read_text())
        assert len(timed["values"]["repeats"]) == 3
    capsys.readouterr()
    assert main(["bench", "--plan", "--profile", "streamed.toml", "--out", "streamed2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^{method}\s+prune, layer by layer\s", out, re.M)
    assert "read rates:" in out


@pytest.mark.parametrize("line, message", [
    ('max_memory = "6 apples"', "not a memory size: '6 apples'"),
    ('max_memory = "6GB"\ndevice = "cuda"', "max_memory bounds a prune on the CPU"),
    ('max_memory = "1000"', "a memory bound of 1 kB ([model] max_memory) is below what shortgpt needs layer by layer"),
])
def test_a_bad_bound_is_refused_in_one_line(tmp_path, tiny_folder, monkeypatch, capfd, line, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(PROFILE.format(spec=tiny_folder, bound=line, method="shortgpt"))
    assert main(["bench", "--plan", "--profile", "p.toml", "--out", "run", "--quiet"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "run").exists()
