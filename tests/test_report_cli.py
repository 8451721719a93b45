"""Exit codes of `laco compare` and `laco gate`, and of `pytest suites --run` on synthetic runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from run_fixtures import good_models, write_run

from laco.cli import main
from laco.report.compare import Tolerance, compare_runs, load_tolerances
from laco.report.judge import load_claims, suites_dir
from laco.report.runs import load_run

ROOT = Path(__file__).resolve().parents[1]


def run_of(tmp_path, name, models, **kw):
    return str(write_run(tmp_path / "runs" / name, models, **kw))


# --- compare ---------------------------------------------------------------------------------------

def test_compare_of_a_run_with_itself_has_no_regression(tmp_path, capsys):
    a = run_of(tmp_path, "a", good_models())
    out = tmp_path / "cmp.md"
    assert main(["compare", a, a, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "**no regression**" in text and out.read_text() == text


def test_compare_flags_an_accuracy_drop_beyond_noise_and_a_slower_model(tmp_path, capsys):
    a = run_of(tmp_path, "a", good_models())
    models = good_models()
    models["laco"]["accuracy"]["arc_easy"] = 0.30  # 47 -> 30 points: far beyond 2 stderr (~10 points)
    models["laco"]["accuracy"]["piqa"] = 0.61  # -2 points: within noise
    models["laco"]["hf"] = 52.0 / 1.5  # 1.5x slower: beyond the 1.35 factor
    models["dense"]["peak_mb"] = 1300.0  # +0.8%: within 15%
    b = run_of(tmp_path, "b", models)
    assert main(["compare", a, b]) == 1
    text = capsys.readouterr().out
    regressed = {tuple(c.strip() for c in line.split("|")[1:3]) for line in text.splitlines() if "**REGRESSION**" in line}
    assert ("laco", "accuracy.arc_easy") in regressed
    assert ("laco", "throughput_hf.output_tokens_per_s") in regressed
    assert ("laco", "accuracy.piqa") not in regressed and ("dense", "memory.peak_mb") not in regressed


def test_compare_counts_a_claim_that_stopped_passing(tmp_path, capsys):
    a = run_of(tmp_path, "a", good_models())
    models = good_models()
    models["laco"]["prune_s"] = 40.0  # slower than both width baselines now
    b = run_of(tmp_path, "b", models)
    deltas = compare_runs(load_run(a), load_run(b), [], load_claims())
    assert [(d.metric, d.change) for d in deltas] == [("claim laco-pruning-time-below-baselines", "PASS → FAIL")]


def test_compare_treats_a_lost_measurement_as_a_regression_unless_allowed(tmp_path, capsys):
    a = run_of(tmp_path, "a", good_models())
    models = good_models()
    models["laco"]["omit"] = ["perplexity"]
    b = run_of(tmp_path, "b", models)
    assert main(["compare", a, b]) == 1
    assert re.search(r"\| laco +\| perplexity.windows.ppl .*\*\*lost\*\*", capsys.readouterr().out)
    assert main(["compare", a, b, "--allow-lost"]) == 0


def test_compare_ratio_tolerances_in_both_directions(tmp_path):
    a = load_run(run_of(tmp_path, "a", good_models()))
    models = good_models()
    models["laco"]["ppl"] = 31.5 * 1.03  # lower is better: 3% worse > 2% allowed
    models["laco"]["vllm"] = 265.0 * 1.5  # higher is better: an improvement
    b = load_run(run_of(tmp_path, "b", models))
    tolerances = [Tolerance("perplexity.windows.ppl", "lower", 1.02), Tolerance("throughput_vllm.output_tokens_per_s",
                                                                                   "higher", 1.25)]
    status = {(d.model, d.metric): d.status for d in compare_runs(a, b, tolerances)}
    assert status[("laco", "perplexity.windows.ppl")] == "REGRESSION"
    assert status[("laco", "throughput_vllm.output_tokens_per_s")] == "better"
    assert status[("dense", "perplexity.windows.ppl")] == "ok"


def test_compare_bad_input_exits_2(tmp_path):
    a = run_of(tmp_path, "a", good_models())
    assert main(["compare", a, str(tmp_path / "nope")]) == 2
    bad = tmp_path / "tol.toml"
    bad.write_text('[[metric]]\nname = "memory.param_mb"\nbetter = "smaller"\n')
    assert main(["compare", a, a, "--tolerances", str(bad)]) == 2


def test_shipped_tolerances_parse():
    names = {t.metric for t in load_tolerances(suites_dir() / "tolerances.toml")}
    assert {"accuracy", "perplexity.windows.ppl", "pruning_time.seconds"} <= names


# --- gate ------------------------------------------------------------------------------------------

def test_gate_passes_a_good_run(tmp_path, capsys):
    assert main(["gate", run_of(tmp_path, "g", good_models())]) == 0
    assert "**PASS**: 2 of 2 gated verdicts pass" in capsys.readouterr().out


def test_gate_fails_when_a_gated_claim_fails(tmp_path, capsys):
    models = good_models()
    models["laco"]["param_mb"] = 600.0  # more memory than dense
    assert main(["gate", run_of(tmp_path, "g", models)]) == 1
    text = capsys.readouterr().out
    assert "**FAIL**: 1 of 2 gated verdicts pass; 1 blocking" in text
    assert re.search(r"`laco-memory-below-dense` +\| laco .*\*\*FAIL\*\*", text)


def test_gate_ignores_ungated_failures(tmp_path):
    models = good_models()
    models["laco"]["accuracy"] = {t: 0.1 for t in models["laco"]["accuracy"]}  # gated on paper models only
    assert main(["gate", run_of(tmp_path, "g", models)]) == 0
    assert main(["gate", run_of(tmp_path, "p", models, profile="llama2-7b")]) == 1


def test_gate_blocks_on_gated_claims_not_measured_unless_allowed(tmp_path, capsys):
    models = good_models()
    models["laco"]["omit"] = ["memory"]
    run = run_of(tmp_path, "g", models)
    assert main(["gate", run]) == 1
    assert "not measured" in capsys.readouterr().out
    assert main(["gate", run, "--allow-missing"]) == 0


def test_gate_bad_input_exits_2(tmp_path):
    assert main(["gate", str(tmp_path)]) == 2
    assert main(["gate", run_of(tmp_path, "g", good_models()), "--claims", str(tmp_path / "none.toml")]) == 2


# --- the suites ------------------------------------------------------------------------------------

def pytest_suites(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider", "-rs", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["good", "bad", "missing", "none"])
def test_suites_pass_fail_and_skip_what_is_not_measured(tmp_path, case):
    models = good_models()
    if case == "bad":
        models["laco"]["param_mb"] = 600.0
    if case == "missing":
        models["laco"]["omit"] = ["accuracy"]
    run = run_of(tmp_path, case, models)
    result = pytest_suites(*([] if case == "none" else ["--run", run]))
    tail = result.stdout.strip().splitlines()[-1]
    if case == "good":
        assert result.returncode == 0 and tail.startswith("13 passed"), result.stdout
        assert "claims of run good (profile smollm2-135m)" in result.stdout
    elif case == "bad":
        assert result.returncode == 1 and "2 failed, 11 passed" in tail, result.stdout  # vs dense and vs baselines
        assert "laco-memory-below-dense fails for laco" in result.stdout
    elif case == "missing":  # accuracy claims are skipped as not measured, never passed
        assert result.returncode == 0 and "8 passed, 5 skipped" in tail, result.stdout
        assert "not measured: laco: no accuracy result" in result.stdout
    else:
        assert result.returncode == 0 and "13 skipped" in tail, result.stdout
        assert "no run given" in result.stdout
