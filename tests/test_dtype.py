"""The dtype of a run: the CPU's native bf16 matmul read from its flags, the fallback a profile states
(float32 with one line, or refused), `laco bench --dtype`, the dtype in every measurement's settings and
fingerprints, and the item-by-item comparison of two dtypes (bench.dtype_compare) on a tiny model."""

from __future__ import annotations

import json
import math

import pytest

from bench import cli as bench_cli
from bench.context import RunContext
from bench import dtype as bench_dtype
from bench.dtype import override_dtype, settle_dtype
from bench.profile import parse_profile
from bench.runner import MODULES, dense_fingerprint
from bench.store import RunStore
from laco import LacoError, provenance

SAPPHIRE_RAPIDS = {"fpu", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
ICE_LAKE = {"fpu", "avx2", "avx512f", "avx512bw", "avx512_vnni"}  # AVX-512, but no bf16 dot products
COOPER_LAKE = {"fpu", "avx2", "avx512f", "avx512_bf16"}


def fake_cpu(monkeypatch, flags: set[str], rates: tuple[float, float] = (202.0, 142.0)) -> None:
    """This CPU's flags and, for AVX512-BF16 alone, its measured (float32, bf16) matmul GFLOP/s (by default
    the Intel CPU's of bench.dtype's docstring, where bf16 is slower)."""
    monkeypatch.setattr(provenance, "cpu_flags", lambda: set(flags))
    monkeypatch.setattr(bench_dtype, "matmul_rates", lambda: rates)


def bf16_profile(**model):
    return parse_profile({"model": {"spec": "smollm2-135m", "dtype": "bfloat16", **model}})


@pytest.mark.parametrize(("flags", "expected"), [(SAPPHIRE_RAPIDS, "amx_bf16"), (COOPER_LAKE, "avx512_bf16"),
                                                 (ICE_LAKE, None), ({"amx_bf16"}, None), (set(), None)])
def test_bf16_matmul_is_read_from_the_cpu_flags(flags, expected):
    # amx_bf16 without amx_tile (the tiles the kernel must enable) is no AMX
    assert provenance.bf16_matmul(flags) == expected


def test_the_flags_come_from_proc_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 sse\nbugs\t: x\n\nprocessor\t: 1\nflags\t: fpu\n")
    real = provenance.Path
    monkeypatch.setattr(provenance, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real(p))
    assert provenance.cpu_flags() == {"fpu", "avx512_bf16", "sse"}
    assert provenance.device_info("cpu")["bf16_matmul"] == "avx512_bf16"


def test_bf16_runs_as_asked_on_a_cpu_with_amx(monkeypatch, capsys):
    fake_cpu(monkeypatch, SAPPHIRE_RAPIDS)
    for fallback in ("refuse", "float32", "keep"):
        profile = bf16_profile(bf16_fallback=fallback)
        settle_dtype(profile)
        assert (profile.model.dtype, profile.model.dtype_note) == ("bfloat16", None)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("flags", "why"), [
    (ICE_LAKE, "no native bf16 matmul at all: /proc/cpuinfo shows none of amx_bf16 amx_tile avx512_bf16"),
    (COOPER_LAKE, "only AVX512-BF16: /proc/cpuinfo shows avx512_bf16, not amx_bf16 amx_tile"),
    ({"avx512_bf16", "amx_tile"}, "only AVX512-BF16: /proc/cpuinfo shows amx_tile avx512_bf16, not amx_bf16")])
def test_without_amx_the_fallback_profile_runs_float32_and_says_why(monkeypatch, capsys, flags, why):
    fake_cpu(monkeypatch, flags)
    profile = bf16_profile(bf16_fallback="float32")
    settle_dtype(profile)
    assert profile.model.dtype == "float32"
    assert why in profile.model.dtype_note and "than float32" in profile.model.dtype_note
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("laco bench: float32 instead of bfloat16: this CPU has no AMX") and why in line
    settle_dtype(profile)  # settled once: a second look changes nothing and says nothing more
    assert profile.model.dtype == "float32" and capsys.readouterr().err == ""


def test_avx512_bf16_alone_is_measured_bf16_kept_where_it_runs_faster(monkeypatch, capsys):
    """AVX512-BF16 without AMX: fast on one CPU (an AMD EPYC: a SmolLM2 forward in 0.40x float32's time), slow
    on another (1.38x); the matmul measured as the run starts decides, at 1.2x float32's rate."""
    for rates, kept in (((50.0, 140.0), True), ((100.0, 121.0), True), ((100.0, 119.0), False), ((202.0, 142.0), False)):
        fake_cpu(monkeypatch, COOPER_LAKE, rates)
        profile = bf16_profile(bf16_fallback="float32")
        settle_dtype(profile)
        assert (profile.model.dtype == "bfloat16") == kept, rates
        line = capsys.readouterr().err.strip()
        if kept:
            assert line == "" and profile.model.dtype_note is None
        else:
            ratio = f"{rates[1] / rates[0]:.2f}x"
            assert f"its bf16 matmul ran at {ratio} float32's here ({rates[1]:,.0f} against {rates[0]:,.0f} GFLOP/s)" in line


def test_without_amx_a_refusing_profile_is_refused(monkeypatch):
    fake_cpu(monkeypatch, COOPER_LAKE)
    profile = bf16_profile()  # the schema's default is to refuse
    assert profile.model.bf16_fallback == "refuse"
    with pytest.raises(LacoError, match="bf16_fallback is \"refuse\""):
        settle_dtype(profile)
    assert profile.model.dtype == "bfloat16" and profile.model.dtype_note is None


def test_without_amx_a_bf16_prune_dtype_follows_the_fallback_too(monkeypatch, capsys):
    """An explicit `prune_dtype = "bfloat16"` on a CPU without AMX is settled like `dtype`: never slow unsaid."""
    fake_cpu(monkeypatch, COOPER_LAKE)
    profile = parse_profile({"model": {"spec": "smollm2-135m", "dtype": "float32", "prune_dtype": "bfloat16",
                                       "bf16_fallback": "float32"}})
    settle_dtype(profile)
    assert (profile.model.dtype, profile.model.prune_dtype, profile.model.pruning_dtype()) == ("float32",) * 3
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("laco bench: float32 instead of bfloat16 pruning ([model] prune_dtype): this CPU has no AMX")
    refusing = parse_profile({"model": {"spec": "smollm2-135m", "prune_dtype": "bfloat16"}})
    with pytest.raises(LacoError, match=r"^bfloat16 pruning \(\[model\] prune_dtype\) asked, but this CPU has no AMX"):
        settle_dtype(refusing)
    fake_cpu(monkeypatch, SAPPHIRE_RAPIDS)
    fast = parse_profile({"model": {"spec": "smollm2-135m", "prune_dtype": "bfloat16"}})
    settle_dtype(fast)
    assert fast.model.pruning_dtype() == "bfloat16" and fast.model.dtype_note is None


def test_without_amx_a_keeping_profile_runs_bf16_and_says_it_is_slow(monkeypatch, capsys):
    fake_cpu(monkeypatch, ICE_LAKE)
    profile = bf16_profile(bf16_fallback="keep")
    settle_dtype(profile)
    settle_dtype(profile)
    assert profile.model.dtype == "bfloat16" and profile.model.dtype_note.startswith("bfloat16 kept although")
    [line] = capsys.readouterr().err.strip().splitlines()  # said once
    assert "no native bf16 matmul at all" in line and "slower than float32" in line
    # float32 and GPU runs are not the CPU's business
    for other in (parse_profile({"model": {"spec": "x", "dtype": "float32"}}), bf16_profile(device="cuda")):
        before = other.model.model_dump()
        settle_dtype(other)
        assert other.model.model_dump() == before


def test_a_typo_in_the_fallback_is_an_error():
    with pytest.raises(LacoError, match="bf16_fallback"):
        bf16_profile(bf16_fallback="fp32")


def test_laco_bench_refuses_before_writing_anything(monkeypatch, tmp_path, capsys):
    fake_cpu(monkeypatch, ICE_LAKE)
    profile = tmp_path / "p.toml"
    profile.write_text('[model]\nspec = "smollm2-135m"\ndtype = "bfloat16"\n[accuracy.tasks]\n')
    out = tmp_path / "run"
    with pytest.raises(LacoError, match="refuse"):
        bench_cli.bench_main(["--profile", str(profile), "--out", str(out), "--quiet"])
    assert not out.exists()


def test_dtype_override_runs_as_asked_and_is_noted(monkeypatch, capsys):
    profile = parse_profile({"model": {"spec": "x", "dtype": "float32", "bf16_fallback": "float32"}})
    override_dtype(profile, "float32")  # the profile's own: nothing to note
    assert profile.model.dtype_note is None
    override_dtype(profile, "bfloat16")
    assert (profile.model.dtype, profile.model.dtype_note) == ("bfloat16", "--dtype bfloat16 over the profile's float32")
    fake_cpu(monkeypatch, COOPER_LAKE)
    settle_dtype(profile)  # an explicit ask is run, not fallen back from, and its slowness is said
    assert profile.model.dtype == "bfloat16"
    assert profile.model.dtype_note.startswith("--dtype bfloat16 over the profile's float32; bfloat16 kept although")
    assert "only AVX512-BF16" in capsys.readouterr().err


def test_laco_bench_takes_dtype(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("bench.runner.run_profile", lambda name, profile, out, **kw: seen.setdefault("p", profile) and [])
    monkeypatch.setattr("bench.summary.summary_table", lambda out: "")
    profile = tmp_path / "p.toml"
    profile.write_text('[model]\nspec = "smollm2-135m"\ndtype = "float32"\n')
    bench_cli.bench_main(["--profile", str(profile), "--out", str(tmp_path / "r"), "--dtype", "bfloat16", "--quiet"])
    assert seen["p"].model.dtype == "bfloat16" and "--dtype bfloat16" in seen["p"].model.dtype_note
    with pytest.raises(LacoError, match="--dtype: invalid choice: 'bf16'"):
        bench_cli.bench_parser().parse_args(["--profile", "smoke", "--dtype", "bf16"])


@pytest.mark.parametrize("name", [n for n in MODULES if n != "throughput_vllm"])
def test_the_dtype_is_in_every_measurements_settings(name, tmp_path, monkeypatch):
    import importlib

    monkeypatch.setattr("bench.vllm.environment.vllm_python", lambda configured: None)
    settings = {}
    for dtype in ("float32", "bfloat16"):
        profile = parse_profile({"model": {"spec": "smollm2-135m", "dtype": dtype}, "perplexity": {"lm_eval_wikitext": False}})
        ctx = RunContext(profile, RunStore(tmp_path / dtype), None, progress=False)
        settings[dtype] = importlib.import_module(MODULES[name]).settings(ctx)
        assert settings[dtype]["dtype"] == dtype
    assert {k: v for k, v in settings["float32"].items() if k != "dtype"} == \
           {k: v for k, v in settings["bfloat16"].items() if k != "dtype"}


def test_the_dtype_is_in_the_vllm_settings_and_the_fingerprints(tmp_path, monkeypatch):
    from bench.vllm import measure as vllm_measure

    monkeypatch.setattr("bench.vllm.environment.vllm_python", lambda configured: None)
    profile = parse_profile({"model": {"spec": "smollm2-135m", "dtype": "bfloat16"}})
    settings = vllm_measure.settings(RunContext(profile, RunStore(tmp_path), None, progress=False))
    assert settings["dtype"] == settings["vllm"]["dtype"] == "bfloat16"  # the engine is asked the HF dtype
    assert dense_fingerprint("source", "float32") != dense_fingerprint("source", "bfloat16")


# --- bench.dtype_compare on a tiny model -----------------------------------------------------------

TINY_PROFILE = """
[model]
spec = "{folder}"
[[methods]]
name = "laco"
label = "laco-x"
params = {{ merge = "reference", C = 3, L = 1, I = 2, T = 0.3 }}
[accuracy]
backend = "hf-shared"
batch_size = 4
max_length = 256
[accuracy.tasks]
arc_easy = {{ limit = 6 }}
openbookqa = {{ limit = 4 }}
[perplexity]
window = 32
n_windows = 5
lm_eval_wikitext = false
"""


def compare(tmp_path, folder, data_dir, dtypes: str, *extra: str) -> tuple[int, dict]:
    from bench import dtype_compare

    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE.format(folder=folder))
    out = tmp_path / f"{dtypes}.json"
    code = dtype_compare.main(["--profile", str(profile), "--method", "laco-x", "--dtypes", dtypes, *extra,
                               "--data-dir", str(data_dir), "--work", str(tmp_path / dtypes), "--out", str(out)])
    return code, json.loads(out.read_text())


def test_two_float32_runs_compare_as_identical(tmp_path, tiny_folder, data_dir, capsys):
    code, doc = compare(tmp_path, tiny_folder, data_dir, "float32,float32")
    assert code == 0
    assert (tmp_path / "float32,float32" / "0-float32" / "weights" / "laco-x").is_dir()  # pruned twice, apart
    assert (tmp_path / "float32,float32" / "1-float32" / "weights" / "laco-x").is_dir()
    assert set(doc["comparisons"]) == {"dense", "laco-x", "laco-x.float32-pruned"}
    for key in doc["comparisons"]:
        [c] = doc["comparisons"][key]
        assert c["same_choice"] == 1.0 and c["max_abs_ll_diff"] == 0.0 and c["median_abs_ll_diff"] == 0.0
        assert {k: c["accuracy_difference"][k] for k in ("estimate", "low", "high")} == {"estimate": 0, "low": 0, "high": 0}
        assert c["perplexity"]["per_window_ratio"] == [1.0] * 5 and c["perplexity"]["ratio"]["estimate"] == 1.0
        assert {t: v["items"] for t, v in c["tasks"].items()} == {"arc_easy": 6, "openbookqa": 4}
    assert doc["prunes"]["same_layers"] is True and doc["verdicts"]["moved"] == []
    table = capsys.readouterr().out
    assert "| **dense**" in table and "100.00%" in table and "the same layers" in table


def test_float32_against_bfloat16_has_the_expected_structure(tmp_path, tiny_folder, data_dir):
    code, doc = compare(tmp_path, tiny_folder, data_dir, "float32,bfloat16")
    assert code == 0 and doc["dtypes"] == ["float32", "bfloat16"]
    assert [s["torch_dtype"] for s in doc["scores"]["dense"]] == ["float32", "bfloat16"]
    assert [p["dtype"] for p in doc["prunes"]["per_dtype"]] == ["float32", "bfloat16"]
    cast = doc["scores"]["laco-x.float32-pruned"]
    assert cast[0] == doc["scores"]["laco-x"][0] and cast[1]["torch_dtype"] == "bfloat16"  # the float32 prune, cast
    assert doc["verdicts"]["variants"] == ["float32", "bfloat16", "bfloat16, float32 prune"]
    for key in ("dense", "laco-x", "laco-x.float32-pruned"):
        [c] = doc["comparisons"][key]
        assert (c["reference"], c["dtype"]) == ("float32", "bfloat16")
        assert 0 < c["max_abs_ll_diff"] and c["median_abs_ll_diff"] <= c["max_abs_ll_diff"]
        assert 0 <= c["same_choice"] <= 1
        d = c["accuracy_difference"]
        assert d["low"] <= d["estimate"] <= d["high"]
        ratios = c["perplexity"]["per_window_ratio"]
        assert len(ratios) == 5 and all(math.isfinite(r) and r > 0 for r in ratios) and ratios != [1.0] * 5
        items = doc["scores"][key][1]["tasks"]["arc_easy"]["items"]
        assert all(len(i["ll"]) == i["n_choices"] for i in items)


def test_limit_and_windows_take_the_first_items_and_windows_never_more_than_the_profiles(tmp_path, tiny_folder, data_dir,
                                                                                          capsys):
    code, short = compare(tmp_path, tiny_folder, data_dir, "float32,float32", "--limit", "5", "--windows", "2")
    assert code == 0
    dense = short["scores"]["dense"][0]
    # the profile asks arc_easy 6 and openbookqa 4: --limit 5 shortens the first, not the second
    assert {t: len(d["items"]) for t, d in dense["tasks"].items()} == {"arc_easy": 5, "openbookqa": 4}
    assert len(dense["windows"]["nll"]) == 2 and short["comparisons"]["dense"][0]["perplexity"]["windows"] == 2
    assert "arc_easy 5, openbookqa 4" in capsys.readouterr().out and "the first 2 windows of 32 tokens" in short_header(short)
    (tmp_path / "full").mkdir()
    _, full = compare(tmp_path / "full", tiny_folder, data_dir, "float32,float32")
    first = full["scores"]["dense"][0]
    shortened, whole = dense["tasks"]["arc_easy"]["items"], first["tasks"]["arc_easy"]["items"][:5]
    assert [i["doc_id"] for i in shortened] == [i["doc_id"] for i in whole]  # the same items, scored alike
    for a, b in zip(shortened, whole):  # (batched otherwise: equal to float32's rounding)
        assert a["ll"] == pytest.approx(b["ll"], rel=1e-5)
    assert dense["windows"]["nll"] == pytest.approx(first["windows"]["nll"][:2], rel=1e-5)


def test_a_method_that_matches_another_prunes_that_one_first_in_each_dtype(tmp_path, tiny_folder, data_dir, capsys):
    """llm-pruner-uniform's kind of entry (`target = "match:laco-x"`, a width prune): each dtype's run
    prunes laco-x first, then the matching entry to laco-x's parameter ratio."""
    from bench import dtype_compare

    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE.format(folder=tiny_folder)
                       + '[[methods]]\nname = "llm-pruner"\nlabel = "width-x"\ntarget = "match:laco-x"\n')
    argv = ["--profile", str(profile), "--method", "width-x", "--dtypes", "float32,float32", "--data-dir", str(data_dir),
            "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json")]
    assert dtype_compare.main(argv) == 0
    doc = json.loads((tmp_path / "o.json").read_text())
    for run in ("0-float32", "1-float32"):
        models = {label: json.loads((tmp_path / "w" / run / "models" / f"{label}.json").read_text())["record"]
                  for label in ("laco-x", "width-x")}
        ratios = [r["parameters"]["pruning_ratio"] for r in models.values()]
        assert ratios[1] == pytest.approx(ratios[0], abs=0.02) and models["laco-x"]["layer_sources"]
    printed = capsys.readouterr().out
    assert doc["prunes"]["same_layers"] is None and "a width prune: no layers to compare" in printed
    prunes = printed.split("no layers to compare")[1].split("Wall seconds")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in prunes.splitlines() if line.startswith("| float32")]
    assert [r[1] for r in rows] == ["-", "-"]  # a width prune keeps every layer: no count to show
    [c] = doc["comparisons"]["width-x"]
    assert c["same_choice"] == 1.0 and c["max_abs_ll_diff"] == 0.0


def short_header(doc: dict) -> str:
    from bench.dtype_compare import markdown

    return markdown(doc).splitlines()[0]


def test_an_unknown_method_or_dtype_is_one_line(tmp_path, tiny_folder, data_dir, capsys):
    from bench import dtype_compare

    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE.format(folder=tiny_folder))
    for extra in (["--method", "nope"], ["--dtypes", "float32,bf16"], ["--dtypes", "float32"], ["--limit", "0"]):
        argv = ["--profile", str(profile), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json"), *extra]
        assert dtype_compare.main(argv) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o.json").exists()


def test_the_report_header_shows_the_dtype_run_and_the_cpus_bf16_matmul():
    from pathlib import Path

    from suites.evidence import Run
    from suites.report.overview import header, run_section

    note = "float32 instead of bfloat16: this CPU has no AMX (only AVX512-BF16)"
    run = Run(Path("r"), {"profile": {"model": {"spec": "smollm2-135m", "dtype": "float32", "dtype_note": note}},
                          "device": {"device": "cpu", "bf16_matmul": "avx512_bf16"}}, {}, {})
    first = header(run, [])  # the report's first lines
    assert f"float32; {note} on cpu (bf16_matmul avx512_bf16)" in first
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in run_section(run).splitlines()
            if line.startswith("| ")}
    assert rows["dtype"] == f"float32; {note}"
    assert "bf16_matmul=avx512_bf16" in rows["device"]
