"""The bench side of post-training and re-pruning, on a tiny Llama: a profile entry with `post_train`
measures the trained model (its weights moved, its record says how); a killed post-training is done
again from the saved pruned model and a finished one is reused; an entry with `source` prunes that
entry's model further, its ratio stated against the dense model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import bench.pruned
import laco.posttrain
from bench import runner
from bench.profile import parse_profile
from laco.config import read_toml

PROFILE = """
measurements = ["perplexity", "pruning_time"]

[model]
spec = "{spec}"

[[methods]]
name = "laco"
params = {{ merge = "paper", C = 3, T = 0.3 }}
calibration = {{ wikitext_documents = [1, 3], sample = 4 }}
post_train = {{ recipe = "continue", params = {{ lr = 1e-3, seq_len = 32, batch_size = 2, tokens = 64 }} }}

[[methods]]
name = "shortgpt"
label = "short-of-laco"
source = "laco"
target = 0.6

[perplexity]
window = 16
n_windows = 1
batch_size = 1
lm_eval_wikitext = false

[pruning_time]
repeats = 1
"""


class Killed(BaseException):
    """A SIGKILL as the run sees it: no handler of the bench runs."""


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def parameters(folder: Path) -> int:
    return sum(t.numel() for t in weights(folder).values())


def layers(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["num_hidden_layers"]


def counted(monkeypatch) -> Counter:
    calls: Counter = Counter()
    prune, train = bench.pruned.prune_and_save, laco.posttrain.run_post_training

    def counted_prune(method, *args, **kwargs):
        calls[("prune", method.label)] += 1
        return prune(method, *args, **kwargs)

    def counted_train(*args, **kwargs):
        calls["post-train"] += 1
        return train(*args, **kwargs)

    monkeypatch.setattr(bench.pruned, "prune_and_save", counted_prune)
    monkeypatch.setattr(laco.posttrain, "run_post_training", counted_train)
    return calls


@pytest.fixture(scope="module")
def ran(tmp_path_factory, data_dir):
    """One run folder through a killed post-training, its resume and a rerun: (run, profile, calls per pass)."""
    from conftest import tiny_loaded

    root = tmp_path_factory.mktemp("posttrain-run")
    loaded = tiny_loaded("llama")
    loaded.model.save_pretrained(root / "dense")
    loaded.tokenizer.save_pretrained(root / "dense")
    (root / "p.toml").write_text(PROFILE.format(spec=root / "dense"))
    profile = parse_profile(read_toml(root / "p.toml", "profile"))
    run, passes = root / "run", []
    with pytest.MonkeyPatch.context() as patch:
        def killed(*args, **kwargs):
            raise Killed

        patch.setattr(laco.posttrain, "run_post_training", killed)
        with pytest.raises(Killed):
            runner.run_profile("p", profile, run, data_dir=str(data_dir), progress=False)
    passes.append(json.loads((run / "models" / "laco.json").read_text()))  # as the kill left it
    for _ in range(2):
        with pytest.MonkeyPatch.context() as patch:
            calls = counted(patch)
            assert runner.run_profile("p", profile, run, data_dir=str(data_dir), progress=False) == []
            passes.append(calls)
    return run, root / "dense", passes


def test_a_killed_post_training_is_done_again_from_the_saved_pruned_model_and_a_finished_one_reused(ran):
    run, _, (left, resumed, rerun) = ran
    assert "post_train_settings" not in left and left["saved"].endswith("weights/laco")  # the pruning stage only
    assert resumed == Counter({"post-train": 1, ("prune", "short-of-laco"): 1})  # laco's pruning kept
    assert rerun == Counter()
    doc = json.loads((run / "models" / "laco.json").read_text())
    assert doc["pruned"]["weights_sha256"] == left["weights_sha256"]  # the very model the kill left


def test_the_post_trained_model_is_the_one_measured_and_its_weights_moved(ran, data_dir):
    from laco.calibration import unread_wikitext_documents, wikitext_documents
    from laco.loading import load_tokenizer

    run, dense, _ = ran
    doc = json.loads((run / "models" / "laco.json").read_text())
    trained, pruned = Path(doc["saved"]), Path(doc["pruned"]["saved"])
    assert trained == run / "weights" / "laco+post-trained" and pruned == run / "weights" / "laco"
    before, after = weights(pruned), weights(trained)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    post = doc["record"]["post_training"]
    assert post["recipe"] == "continue" and post["hyperparameters"]["lr"] == 1e-3
    assert post["tokens_seen"] == 64 and post["steps"] == 1  # 64 tokens, 2 sequences of 32 a step
    assert post["input_fingerprint"] == doc["pruned"]["record"]["fingerprint"]
    assert doc["fingerprint"] != doc["pruned"]["fingerprint"]
    # the text: every document the run's 16-token window leaves unread, but the two calibrated on
    first = unread_wikitext_documents(load_tokenizer(str(dense)), 16, 1, lm_eval_documents=0, data=data_dir)
    unread = set(range(first, len(wikitext_documents(data_dir))))
    assert first >= 1 and set(post["text"]["documents"]) == unread - {1, 2}
    result = json.loads((run / "results" / "laco" / "perplexity.json").read_text())
    assert result["model_fingerprint"] == doc["fingerprint"] and result["status"] == "ok"


def test_a_source_entry_prunes_the_earlier_models_weights_and_states_its_ratio_against_dense(ran):
    run, dense, _ = ran
    laco_doc = json.loads((run / "models" / "laco.json").read_text())
    doc = json.loads((run / "models" / "short-of-laco.json").read_text())
    folder = Path(doc["saved"])
    assert layers(folder) < layers(run / "weights" / "laco+post-trained") < layers(dense)
    achieved = 1 - parameters(folder) / parameters(dense)  # against the dense model, from the weights themselves
    assert doc["record"]["parameters"]["pruning_ratio"] == pytest.approx(achieved, abs=1e-9)
    assert doc["record"]["pruned_from"]["fingerprint"] == laco_doc["fingerprint"]  # the post-trained model
    assert doc["record"]["target"]["ratio"] == 0.6 and doc["record"]["pruned_from"]["target"]["ratio"] < 0.6
    # the target 0.6 is the dense model's: the layer count nearest to keeping 40% of the dense parameters
    # (a layer's parameters and the rest from what laco removed), not 40% of what laco kept
    per_layer = (parameters(dense) - parameters(run / "weights" / "laco")) / (layers(dense) - layers(run / "weights" / "laco"))
    rest = parameters(dense) - layers(dense) * per_layer
    assert layers(folder) == round((0.4 * parameters(dense) - rest) / per_layer)
    assert layers(folder) != round((0.4 * parameters(run / "weights" / "laco") - rest) / per_layer)  # the test tells them apart
    # the layers shortgpt kept are the post-trained model's own
    kept, trained = weights(folder), weights(run / "weights" / "laco+post-trained")
    assert any(torch.equal(kept["model.layers.0.mlp.down_proj.weight"], trained[f"model.layers.{i}.mlp.down_proj.weight"])
               for i in range(layers(run / "weights" / "laco+post-trained")))
    timing = json.loads((run / "results" / "short-of-laco" / "pruning_time.json").read_text())
    assert timing["status"] == "ok"  # timed again from the source: the same parameter count or it fails


def test_a_random_init_control_trains_the_same_recipe_from_random_weights_of_the_pruned_shape(tmp_path, data_dir):
    """`random_init = true`: the trainer is told so, the settings name it (a change trains again) and the
    record says it; its weights are none of the pruned model's."""
    from conftest import tiny_loaded

    loaded = tiny_loaded("llama")
    loaded.model.save_pretrained(tmp_path / "dense")
    loaded.tokenizer.save_pretrained(tmp_path / "dense")
    control = PROFILE.replace('post_train = {{ recipe = "continue",', 'post_train = {{ recipe = "continue", random_init = true,')
    (tmp_path / "p.toml").write_text(control.replace(', "pruning_time"', "")
                                     .format(spec=tmp_path / "dense"))
    profile = parse_profile(read_toml(tmp_path / "p.toml", "profile"))
    assert runner.run_profile("p", profile, tmp_path / "run", data_dir=str(data_dir), progress=False) == []
    doc = json.loads((tmp_path / "run" / "models" / "laco.json").read_text())
    assert doc["record"]["post_training"]["random_init"] is True and doc["post_train_settings"]["random_init"] is True
    pruned, trained = weights(Path(doc["pruned"]["saved"])), weights(Path(doc["saved"]))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert pruned.keys() == trained.keys() and not torch.allclose(pruned[name], trained[name], atol=1e-2)


@pytest.mark.parametrize("model, autocast", [('dtype = "bfloat16"\nbf16_fallback = "keep"\nprune_dtype = "float32"\n', True),
                                             ('dtype = "float32"\n', False)])
def test_a_run_measured_in_bf16_trains_under_bf16_autocast_with_float32_weights(tmp_path, data_dir, monkeypatch,
                                                                                model, autocast):
    from conftest import tiny_loaded

    loaded = tiny_loaded("llama")
    loaded.model.save_pretrained(tmp_path / "dense")
    loaded.tokenizer.save_pretrained(tmp_path / "dense")
    text = PROFILE.replace(', "pruning_time"', "").replace("[model]\n", "[model]\n" + model)
    (tmp_path / "p.toml").write_text(text.format(spec=tmp_path / "dense"))
    profile = parse_profile(read_toml(tmp_path / "p.toml", "profile"))
    told = {}

    def trainer(*args, **kwargs):
        told.update(kwargs)
        raise Killed

    monkeypatch.setattr(laco.posttrain, "run_post_training", trainer)
    with pytest.raises(Killed):
        runner.run_profile("p", profile, tmp_path / "run", data_dir=str(data_dir), progress=False)
    assert told["bf16"] is autocast and told["dtype"] == "float32"
