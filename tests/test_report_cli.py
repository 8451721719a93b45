"""`laco compare` and `laco gate` exit codes, `pytest suites --run` on synthetic runs, and the suites
working from an installed (non-editable) package outside the checkout."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from run_fixtures import N_ITEMS, PROBE, good_models, write_run

from laco.cli import main
from suites.claims import load_claims
from suites.compare import REGRESSION, compare_runs, load_tolerances
from suites.evidence import load_run

ROOT = Path(__file__).resolve().parents[1]


def run_of(tmp_path, name, models, **kw):
    return str(write_run(tmp_path / "runs" / name, models, **kw))


def statuses(a, b):
    deltas = compare_runs(load_run(a), load_run(b), load_tolerances(), load_claims())
    return {(d.model, d.metric): d for d in deltas}


# --- compare ---------------------------------------------------------------------------------------

def test_compare_of_a_run_with_itself_has_no_regression_and_a_zero_difference(tmp_path, capsys):
    a = run_of(tmp_path, "a", good_models())
    out = tmp_path / "cmp.md"
    assert main(["compare", a, a, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "**no regression**" in text and out.read_text() == text
    average = statuses(a, a)[("laco", "accuracy.average")]
    assert average.status == "ok" and average.change == "+0.0 [+0.0, +0.0] pt"


def test_a_paired_drop_that_the_unpaired_bound_hides_is_a_regression(tmp_path, capsys):
    """B loses 3 points on every task (the same model answering 6 of 200 items worse): far inside the
    unpaired 2 sqrt(se_a^2 + se_b^2) bound of the average, but every one of those items moved one way."""
    models = good_models()
    a = run_of(tmp_path, "a", models)
    drop = 0.03
    models["laco"]["accuracy"] = {t: s - drop for t, s in models["laco"]["accuracy"].items()}
    b = run_of(tmp_path, "b", models)
    scores = good_models()["laco"]["accuracy"]
    se = lambda p: math.sqrt(p * (1 - p) / (N_ITEMS - 1))  # noqa: E731  (lm-eval's stderr of a mean of 0/1 items)
    se_avg = lambda s: math.sqrt(sum(se(p) ** 2 for p in s.values())) / len(s)  # noqa: E731
    unpaired = 2 * math.sqrt(se_avg(scores) ** 2 + se_avg({t: p - drop for t, p in scores.items()}) ** 2)
    assert drop < unpaired  # the old test would have called it noise
    assert main(["compare", a, b]) == 1
    text = capsys.readouterr().out
    assert re.search(r"\| laco +\| accuracy.average +\|.*\| \*\*REGRESSION\*\* \|", text)
    d = statuses(a, b)
    assert d[("laco", "accuracy.average")].status == REGRESSION
    piqa = d[("laco", "accuracy.piqa")]
    assert piqa.status == REGRESSION and "6 items lost, 0 gained" in piqa.tolerance
    assert d[("dense", "accuracy.average")].status == "ok"


def test_a_verdict_moving_to_inconclusive_is_reported_not_a_regression(tmp_path):
    models = good_models()
    a = run_of(tmp_path, "a", models)
    models["laco"]["accuracy"] = {t: s + 0.005 for t, s in models["llm-pruner"]["accuracy"].items()}
    b = run_of(tmp_path, "b", models)
    d = statuses(a, b)
    move = d[("laco", "claim laco-beats-width-baselines")]
    assert move.change == "PASS → INCONCLUSIVE" and move.status == "changed"


def test_a_claim_going_from_pass_to_fail_is_a_regression(tmp_path):
    models = good_models()
    a = run_of(tmp_path, "a", models)
    models["laco"]["param_mb"] = 600.0
    b = run_of(tmp_path, "b", models)
    assert statuses(a, b)[("laco", "claim laco-memory-below-dense")].status == REGRESSION


def test_perplexity_and_speedup_are_compared_paired(tmp_path):
    models = good_models()
    a = run_of(tmp_path, "a", models)
    models["laco"]["ppl"] = 31.5 * 1.05  # 5% worse on the same windows: beyond the 2% tolerance
    models["laco"]["hf"] = 20.0  # no longer faster than dense in its own run
    b = run_of(tmp_path, "b", models)
    d = statuses(a, b)
    assert d[("laco", "perplexity")].status == REGRESSION
    assert d[("laco", "throughput_hf.decode_speedup_vs_dense")].status == REGRESSION
    assert d[("dense", "perplexity")].status == "ok"


def test_compare_treats_a_lost_measurement_as_a_regression_unless_allowed(tmp_path, capsys):
    a = run_of(tmp_path, "a", good_models())
    models = good_models()
    models["laco"]["omit"] = ["perplexity"]
    b = run_of(tmp_path, "b", models)
    assert main(["compare", a, b]) == 1
    assert re.search(r"\| laco +\| perplexity .*\*\*lost\*\*", capsys.readouterr().out)
    assert main(["compare", a, b, "--allow-lost"]) == 0


def test_compare_bad_input_exits_2(tmp_path):
    a = run_of(tmp_path, "a", good_models())
    assert main(["compare", a, str(tmp_path / "nope")]) == 2
    bad = tmp_path / "tol.toml"
    bad.write_text("[perplexity]\nratoi = 1.02\n")
    assert main(["compare", a, a, "--tolerances", str(bad)]) == 2


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


def test_gate_blocks_on_an_inconclusive_gated_claim_and_says_why(tmp_path, capsys):
    models = good_models()
    models["laco"]["accuracy"] = {t: s + 0.005 for t, s in models["llm-pruner"]["accuracy"].items()}
    assert main(["gate", run_of(tmp_path, "g", models, profile="llama2-7b")]) == 1
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if "`laco-beats-width-baselines`" in line)
    assert "*INCONCLUSIVE*" in row and "straddles the threshold" in row and "items to decide: " in row


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


def test_gate_tells_what_the_profile_skips_from_what_failed_to_measure(tmp_path, capsys):
    """laco-memory-below-dense is gated everywhere: a profile that does not measure memory leaves it unmeasured by
    design; a memory measurement that failed is a failure to measure."""
    models = good_models()
    models["laco"]["omit"] = ["memory"]
    assert main(["gate", run_of(tmp_path, "design", models, settings={"measurements": ["accuracy", "perplexity",
                                                                                       "throughput_vllm"]})]) == 1
    assert "1 blocking (1 not measured by the profile's design)" in capsys.readouterr().out
    assert main(["gate", run_of(tmp_path, "failed", models)]) == 1
    assert "1 blocking (1 failed to measure)" in capsys.readouterr().out


def test_gate_bad_input_exits_2(tmp_path):
    assert main(["gate", str(tmp_path)]) == 2
    assert main(["gate", run_of(tmp_path, "g", good_models()), "--claims", str(tmp_path / "none.toml")]) == 2


# --- the machine probe: absolute rates across runs ---------------------------------------------------

def slower(models: dict, factor: float) -> dict:
    """The same models on a machine `factor` times slower: every rate divided, every pruning time multiplied."""
    for spec in models.values():
        for engine in ("hf", "vllm"):
            if isinstance(spec.get(engine), float):
                spec[engine] /= factor
        if "prune_s" in spec:
            spec["prune_s"] *= factor
    return models


def probe_of(factor: float) -> dict:
    return {**PROBE, "fp32_gflops": PROBE["fp32_gflops"] / factor, "memory_gbps": PROBE["memory_gbps"] / factor}


@pytest.mark.parametrize("probe_slower, regression", [(2.0, False), (1.0, True)])
def test_compare_normalises_absolute_rates_by_the_machine_probes(tmp_path, probe_slower, regression):
    """B runs 2x slower. With a probe 2x slower as well the machine explains it: no regression. With equal
    probes the same slowdown is one: dense tokens/s and pruning seconds regress. Speed-ups within each run
    are the same either way."""
    a = run_of(tmp_path, "a", good_models())
    b = run_of(tmp_path, "b", slower(good_models(), 2.0), probe=probe_of(probe_slower))
    d = statuses(a, b)
    rate, seconds = d[("dense", "throughput_hf.decode_tokens_per_s")], d[("laco", "pruning_time")]
    assert (rate.status == REGRESSION) is regression and (seconds.status == REGRESSION) is regression
    assert rate.tolerance.startswith("normalised by the probes (B's machine ×0.5 A's)" if probe_slower == 2 else
                                     "normalised by the probes (B's machine ×1 A's)")
    assert d[("laco", "throughput_hf.decode_speedup_vs_dense")].status == "ok"


def test_runs_without_a_probe_are_compared_raw_and_said_so(tmp_path, capsys):
    a = run_of(tmp_path, "a", good_models(), probe=None)
    b = run_of(tmp_path, "b", slower(good_models(), 1.2), probe=None)  # within the raw tolerance ×1.35
    assert main(["compare", a, b]) == 0
    text = capsys.readouterr().out
    assert "`a` and `b` recorded no machine probe (older runs): absolute rates (dense tokens/s, pruning seconds) are " \
           "compared raw" in text
    assert re.search(r"\| dense +\| throughput_hf\.decode_tokens_per_s .*raw: no probe; worse by ≤ ×1\.35", text)


def test_the_probe_measures_this_machine_in_a_couple_of_seconds():
    pytest.importorskip("torch")
    from bench.probe import measure

    probe = measure("cpu", budget_s=0.05)
    assert probe["fp32_gflops"] > 0 and probe["bf16_gflops"] > 0 and probe["memory_gbps"] > 0, probe
    assert probe["seconds"] < 10
    assert measure("no-such-device")["error"]  # a probe that cannot run says why, never raises


# --- history ---------------------------------------------------------------------------------------

def test_history_draws_each_gated_figure_across_runs_and_marks_the_regression(tmp_path, capsys):
    """Three nights: the second on a machine half as fast (its probe says so), the third as slow without
    the probe saying so. Only the third is a regression, and the history marks it."""
    nightly = tmp_path / "runs"
    run_of(tmp_path, "night-1", good_models())
    run_of(tmp_path, "night-2", slower(good_models(), 2.0), probe=probe_of(2.0))
    run_of(tmp_path, "night-3", slower(good_models(), 2.0))
    out = tmp_path / "reports"
    assert main(["history", str(nightly), "--out", str(out)]) == 0
    assert "history: " in capsys.readouterr().out
    text = (out / "history-smollm2-135m.md").read_text()
    assert "**1 of 2 runs regressed**" in text
    header = next(line for line in text.splitlines() if line.startswith("| figure"))
    assert [c.strip() for c in header.split("|")[3:6]] == ["1", "2", "3 ⚠"]
    rate = next(line for line in text.splitlines() if line.startswith("| dense hf decode tokens per s"))
    medians = [float(c.split()[0]) for c in rate.split("|")[3:6]]
    assert medians[1] == pytest.approx(medians[0]) and medians[2] == pytest.approx(medians[0] / 2)  # normalised
    assert re.search(r"\| laco-memory-below-dense laco +\| memory\.param_mb +\| 0\.7301 \[0\.7301, 0\.7301\] PASS", text)
    assert re.search(r"\| 3 +\| `night-3` .*dense throughput_hf\.decode_tokens_per_s \(REGRESSION\)", text)
    pngs = sorted(p.name for p in (out / "history-smollm2-135m").iterdir())
    assert "dense-hf-decode-tokens-per-s.png" in pngs and "laco-memory-below-dense-laco.png" in pngs
    assert all((out / "history-smollm2-135m" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert all(f"](history-smollm2-135m/{p})" in text for p in pngs)


def test_history_of_no_run_is_a_clear_error(tmp_path):
    assert main(["history", str(tmp_path)]) == 2
    assert main(["history", str(tmp_path / "missing")]) == 2


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
    # 15 LaCo claims pass; skipped: LaCo against the depth baselines (none in the run), CoMe's two claims (no
    # CoMe model: its file is not judged), the six post-training claims (no model post-trained), the profile's
    # acceptance criteria (it declares none)
    if case == "good":
        assert result.returncode == 0 and tail.startswith("15 passed, 10 skipped"), result.stdout
        assert "post-trained no model: claim laco-inherits-parameters is about post-training" in result.stdout
        assert "claims of run good (profile smollm2-135m)" in result.stdout
    elif case == "bad":
        assert result.returncode == 1 and "2 failed, 13 passed" in tail, result.stdout  # vs dense and vs baselines
        assert "laco-memory-below-dense is FAIL for laco" in result.stdout
    elif case == "missing":  # accuracy claims are skipped as not measured, never passed
        assert result.returncode == 0 and "8 passed, 17 skipped" in tail, result.stdout
        assert "not measured: laco: no accuracy result" in result.stdout
    else:
        assert result.returncode == 0 and "25 skipped" in tail, result.stdout
        assert "no run given" in result.stdout


def test_report_and_gate_work_from_an_installed_package_outside_the_checkout(tmp_path):
    """A non-editable install (the wheel's files, no checkout beside them) finds its claims, paper
    figures and tolerances as package data."""
    pytest.importorskip("setuptools")
    import shutil

    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    for part in ("laco", "bench", "suites"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(site), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    run = run_of(tmp_path, "installed", good_models())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LACO_CLAIMS")} | {"PYTHONPATH": str(site)}

    def laco(*args):
        return subprocess.run([sys.executable, "-m", "laco", *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import suites, laco; print(suites.__file__, laco.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True)
    assert all(p.startswith(str(site)) for p in where.stdout.split()), where.stdout + where.stderr
    report = laco("report", run, "--out", str(elsewhere / "reports"))
    assert report.returncode == 0, report.stderr
    assert (elsewhere / "reports" / "installed.md").is_file()
    gate = laco("gate", run)
    assert gate.returncode == 0 and "**PASS**" in gate.stdout, gate.stdout + gate.stderr
    compare = laco("compare", run, run)
    assert compare.returncode == 0, compare.stderr
