"""Profiles: the shipped ones load, carry the paper's settings, and bad input fails clearly."""

from __future__ import annotations

import pytest

from bench.profile import load_profile, parse_profile, profile_names, resolve_profile
from laco import LacoError
from laco.collapse import PAPER_SETTINGS

SHIPPED = {"smoke", "smollm2-135m", "laco-sweep", "laco-ratio-sweep", "laco-ablations", "laco-post-training", "llama2-7b",
           "llama2-13b", "baichuan2-7b", "baichuan2-13b", "llama2-70b", "llama2-7b-shape", "llama2-7b-shape-gpu",
           "llama2-13b-shape", "vllm-tensor-parallel"}


def test_every_shipped_profile_resolves():
    assert set(profile_names()) == SHIPPED
    for name in SHIPPED:
        resolved_name, profile = load_profile(name)
        assert resolved_name == name and profile.model.spec
        assert profile.methods[0].name == "laco" and profile.methods[0].params["merge"] == "reference"


def test_the_cpu_default_runs_laco_at_the_papers_setting_and_ratio_with_baselines_matched_at_27():
    methods = {m["label"]: m for m in load_profile("smollm2-135m")[1].model_dump()["methods"]}
    assert methods["laco-table8"]["params"] == {"merge": "reference", "C": 4, "L": 1, "I": 2, "T": 0.65}
    assert methods["laco-27"]["target"] == 0.27 and "T" not in methods["laco-27"]["params"]
    control = methods.pop("rule-merge-table8")  # identical weights to laco-table8: the checks' control
    assert control["target"] == "match:laco-table8" and "accuracy" not in control["measurements"]
    baselines = [m for k, m in methods.items() if not k.startswith("laco")]
    # the claims' baselines: the paper's, LaCo's ablations, and the depth pruners of CoMe's claims and ours
    assert {m["name"] for m in baselines} == {"drop", "rule-merge", "llm-pruner", "slicegpt", "shortgpt", "come"}
    assert all(m["target"] == "match:laco-27" and m["point"] == "27%" for m in baselines)


def test_the_ratio_sweep_has_every_method_at_each_of_table_7s_points():
    methods = load_profile("laco-ratio-sweep")[1].model_dump()["methods"]
    points = {}
    for m in methods:
        points.setdefault(m["point"], set()).add(m["name"])
    assert set(points) == {"12%", "27%", "45%"}
    every = {"laco", "shortgpt", "drop", "rule-merge", "come", "llm-pruner", "slicegpt"}
    assert points["12%"] == points["27%"] == every
    assert points["45%"] == every - {"rule-merge"}  # it leaves the bottom half alone: 18 of 30 layers out of reach


@pytest.mark.parametrize("name", ["llama2-7b", "llama2-13b", "baichuan2-7b", "baichuan2-13b"])
def test_gpu_profiles_use_the_paper_table_8_setting(name):
    config, _ = PAPER_SETTINGS[name]
    methods = {m["label"]: m for m in load_profile(name)[1].model_dump()["methods"]}
    for method in methods.values():
        if method["name"] == "laco":
            assert {k: method["params"][k] for k in "CLHIT"} == {k: getattr(config, k) for k in "CLHIT"}
    # the B.6 / B.7 ablations run LaCo's own loop settings and merge at LaCo's ratio
    assert {k: methods["drop"]["params"][k] for k in "CLHI"} == {k: getattr(config, k) for k in "CLHI"}
    assert methods["rule-merge"]["params"] == {"merge": methods["laco"]["params"]["merge"], "C": config.C}
    assert all(m["target"] == "match:laco" for m in methods.values() if m["name"] != "laco")


def test_70b_profile_sets_the_multi_gpu_paths():
    profile = load_profile("llama2-70b")[1]
    assert profile.model.device_map == "auto"
    assert profile.accuracy.backend == "vllm" and profile.vllm.tensor_parallel_size > 1
    assert "throughput_vllm" in profile.measurements


def base(**extra) -> dict:
    return {"model": {"spec": "smollm2-135m"}, **extra}


@pytest.mark.parametrize("raw, message", [
    (base(acuracy={}), "unknown key 'acuracy'"),
    (base(accuracy={"batchsize": 4}), "p: unknown key 'accuracy.batchsize'"),
    ({"model": {}}, "p: missing key 'model.spec'"),
    ({}, "p: missing key 'model'"),
    (base(seed="zero"), "p: seed: Input should be a valid integer"),
    (base(measurements=["accuracy", "speed"]), "p: measurements.1: Input should be 'pruning_time', 'memory'"),
    (base(methods=[{"name": "not-a-pruner"}]), "methods[0].name: pruning method 'not-a-pruner' is not registered"),
    (base(methods=[{"params": {}}]), "missing key 'methods.0.name'"),
    (base(throughput={"rounds": 1}), "throughput.rounds: Input should be greater than or equal to 2"),
    (base(methods=[{"name": "laco"}, {"name": "laco"}]), "label: 'laco' is used twice"),
    (base(methods=[{"name": "laco", "label": "dense"}]), "other than 'dense'"),
    (base(methods=[{"name": "laco", "target": "match:later"}]), "must be 'match:LABEL' of an earlier method"),
    (base(methods=[{"name": "laco", "target": 1.5}]), "a ratio must lie in (0, 1)"),
    (base(accuracy={"tasks": {"piqa": {"metric": "f1"}}}), "accuracy.tasks.piqa.metric: Input should be 'acc' or 'acc_norm'"),
    (base(methods=[{"name": "drop", "settings_from": "laco"}]), "must be the label of an earlier laco method"),
    (base(methods=[{"name": "shortgpt"}, {"name": "drop", "settings_from": "shortgpt"}]), "earlier laco method"),
    (base(methods=[{"name": "laco"}, {"name": "come", "settings_from": "laco"}]), "come takes no settings from LaCo"),
])
def test_bad_profiles_fail_with_one_line_naming_the_key(raw, message):
    with pytest.raises(LacoError) as err:
        resolve_profile(raw, "p")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_match_target_and_defaults():
    profile = resolve_profile(base(methods=[{"name": "laco"}, {"name": "laco", "label": "b", "target": "match:laco"}]))
    assert [m["label"] for m in profile["methods"]] == ["laco", "b"]
    assert profile["methods"][1]["target"] == "match:laco" and profile["methods"][0]["params"] == {}
    assert profile["perplexity"]["window"] == 512 and profile["model"]["dtype"] == "float32"
    # each model's ratio point: its own label, or the point of the model whose ratio it matches
    assert [m["point"] for m in profile["methods"]] == ["laco", "laco"]


def test_the_stored_profile_is_the_typed_one_as_a_plain_dict():
    raw = base(methods=[{"name": "laco", "target": 0.25}, {"name": "drop", "target": "match:laco"}],
               throughput={"rounds": 3})
    typed = parse_profile(raw)
    assert typed.throughput.rounds == 3 and typed.methods[1].point == "25%"  # read by attribute
    stored = resolve_profile(raw)
    assert stored == typed.model_dump() and stored["methods"][1]["point"] == "25%"
    assert stored["memory"] == {"prompt_len": 128, "new_tokens": 32, "batch_size": 1, "timeout_s": 600}


def test_ablations_take_the_laco_settings_they_share_and_keep_their_own():
    laco = {"name": "laco", "params": {"merge": "reference", "C": 5, "L": 2, "I": 1, "T": 0.7}}
    profile = resolve_profile(base(methods=[laco, {"name": "drop", "settings_from": "laco"},
                                            {"name": "rule-merge", "settings_from": "laco", "params": {"C": 3}}]))
    drop, rule = profile["methods"][1:]
    assert drop["params"] == {"C": 5, "L": 2, "I": 1}  # no merge (drop always deletes), no T (searched)
    assert rule["params"] == {"merge": "reference", "C": 3}


def test_unknown_profile_name_suggests_the_closest():
    with pytest.raises(LacoError, match="did you mean 'smollm2-135m'"):
        load_profile("smollm2-13m")


def test_post_train_and_source_are_read_into_the_method_entry():
    profile = parse_profile(base(methods=[
        {"name": "laco", "post_train": {"recipe": "lora", "params": {"rank": 4}}},
        {"name": "shortgpt", "source": "laco", "target": 0.45}]))
    post = profile.methods[0].post_train
    assert (post.recipe, post.params, post.documents) == ("lora", {"rank": 4}, "unread")
    assert profile.methods[1].source == "laco" and profile.methods[0].source is None
    assert profile.methods[1].post_train is None
    with pytest.raises(LacoError, match=r"methods\[0\]\.post_train\.documents: must be \[first, end\)"):
        parse_profile(base(methods=[{"name": "laco", "post_train": {"recipe": "continue", "documents": [5, 2]}}]))


def test_the_7b_rehearsal_runs_the_7b_shape_in_bf16_with_one_pruned_copy_at_a_time():
    from bench.weights_kept import alive_at_each_step

    profile, gpu = load_profile("llama2-7b-shape")[1], load_profile("llama2-7b")[1]
    m = profile.model
    assert (m.spec, m.dtype, m.bf16_fallback, m.pruning_dtype(), m.device) == (
        "synthetic:llama2-7b", "bfloat16", "keep", "bfloat16", "cpu")
    assert profile.methods[0].params == gpu.methods[0].params  # LaCo at the paper's Table 8 setting, as on GPU
    assert {x.name for x in profile.methods} < {x.name for x in gpu.methods}
    assert not {"accuracy", "throughput_vllm"} & set(profile.measurements)  # synthetic weights: speed and memory
    assert max(len(labels) for labels in alive_at_each_step(profile)) == 1
