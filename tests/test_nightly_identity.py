"""`laco nightly` (a fresh dated run compared with the newest earlier one, the last N kept) and result
identity end to end: a result measured by other code is measured again, and the report says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_fixtures import good_models, write_run

from laco.cli import main


@pytest.fixture
def fake_bench(monkeypatch):
    """`laco bench` replaced by writing a synthetic finished run (the models of `state["models"]`)."""
    state = {"models": good_models(), "calls": []}

    def bench_main(argv):
        out = Path(argv[argv.index("--out") + 1])
        state["calls"].append(out)
        write_run(out, state["models"])
        return 0

    monkeypatch.setattr("bench.cli.bench_main", bench_main)
    return state


def nightly(tmp_path, *extra):
    return main(["nightly", "--profile", "smollm2-135m", "--runs-dir", str(tmp_path / "runs"),
                 "--reports", str(tmp_path / "reports"), "--keep", "2", *extra])


def test_nightly_compares_with_the_newest_earlier_nightly_and_keeps_the_last_runs(tmp_path, fake_bench, capsys):
    assert nightly(tmp_path) == 0
    assert "nothing to compare with yet" in capsys.readouterr().out
    assert nightly(tmp_path) == 0
    first, second = fake_bench["calls"]
    assert first != second and first.name.startswith("nightly-smollm2-135m-")
    compare = (tmp_path / "reports" / "compare-nightly.md").read_text()
    assert f"`{first.name}` → `{second.name}`" in compare and "**no regression**" in compare
    fake_bench["models"]["laco"]["param_mb"] = 600.0  # tonight's LaCo model grew
    assert nightly(tmp_path) == 1  # the exit code follows laco compare
    third = fake_bench["calls"][-1]
    assert f"`{second.name}` → `{third.name}`" in (tmp_path / "reports" / "compare-nightly.md").read_text()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted([second.name, third.name])  # --keep 2
    assert (tmp_path / "reports" / f"{third.name}.md").is_file()


def test_nightly_takes_an_explicit_baseline(tmp_path, fake_bench):
    baseline = write_run(tmp_path / "baseline", good_models())
    assert nightly(tmp_path, "--baseline", str(baseline)) == 0
    assert "`baseline` →" in (tmp_path / "reports" / "compare-nightly.md").read_text()
    assert main(["nightly", "--runs-dir", str(tmp_path), "--baseline", str(tmp_path / "nope")]) == 2


def tiny_profile(tmp_path, folder) -> Path:
    profile = tmp_path / "tiny.toml"
    profile.write_text(f'measurements = ["flops"]\n[model]\nspec = "{folder}"\n'
                       '[throughput]\nbatch_size = 1\ninput_len = 8\noutput_len = 4\n')
    return profile


def test_a_result_of_other_code_is_measured_again_and_the_report_says_so(tmp_path, tiny_folder, monkeypatch):
    from bench import store

    profile, run = tiny_profile(tmp_path, tiny_folder), tmp_path / "run"
    assert main(["bench", "--profile", str(profile), "--out", str(run), "--quiet"]) == 0
    first = json.loads((run / "results" / "dense" / "flops.json").read_text())
    code = store.code_key()
    monkeypatch.setattr(store, "code_key", lambda: {**code, "source_digest": "one-line-changed", "commit": "f" * 40})
    assert main(["bench", "--profile", str(profile), "--out", str(run), "--quiet"]) == 0
    again = json.loads((run / "results" / "dense" / "flops.json").read_text())
    assert again["provenance"]["started"] >= first["provenance"]["started"]
    assert again["code"]["source_digest"] == "one-line-changed"
    assert again != first  # measured again, not reused
    meta = json.loads((run / "run.json").read_text())
    assert [h["source_digest"] for h in meta["code_history"]] == [code["source_digest"], "one-line-changed"]
    assert main(["report", str(run), "--out", str(tmp_path / "reports")]) == 0
    text = (tmp_path / "reports" / "run.md").read_text()
    assert "## Code behind the numbers" in text and "2 versions of the measuring code" in text
    assert "**other code**" not in text  # every number is the latest code's


def test_results_of_other_code_kept_on_request_are_marked(tmp_path, tiny_folder, monkeypatch):
    from bench import store

    profile, run = tiny_profile(tmp_path, tiny_folder), tmp_path / "run"
    assert main(["bench", "--profile", str(profile), "--out", str(run), "--quiet"]) == 0
    first = (run / "results" / "dense" / "flops.json").read_text()
    code = store.code_key()
    monkeypatch.setattr(store, "code_key", lambda: {**code, "source_digest": "newer"})
    assert main(["bench", "--profile", str(profile), "--out", str(run), "--quiet", "--reuse-results-from-other-code"]) == 0
    assert (run / "results" / "dense" / "flops.json").read_text() == first  # kept
    assert main(["report", str(run), "--out", str(tmp_path / "reports")]) == 0
    text = (tmp_path / "reports" / "run.md").read_text()
    assert "kept on purpose (`laco bench --reuse-results-from-other-code`)" in text and "**other code**" in text


def test_a_model_pruned_by_other_code_is_kept_on_request(tmp_path, tiny_folder, monkeypatch):
    from bench import store

    profile, run = tiny_profile(tmp_path, tiny_folder), tmp_path / "run"
    profile.write_text(profile.read_text() + '[[methods]]\nname = "shortgpt"\nlabel = "shortgpt"\ntarget = 0.25\n')
    assert main(["bench", "--profile", str(profile), "--out", str(run), "--quiet"]) == 0
    model = (run / "models" / "shortgpt.json").read_text()
    result = (run / "results" / "shortgpt" / "flops.json").read_text()
    code = store.code_key()
    monkeypatch.setattr(store, "code_key", lambda: {**code, "source_digest": "newer"})
    assert main(["bench", "--profile", str(profile), "--out", str(run), "--quiet", "--reuse-results-from-other-code"]) == 0
    assert (run / "models" / "shortgpt.json").read_text() == model  # not pruned again
    assert (run / "results" / "shortgpt" / "flops.json").read_text() == result
    assert main(["bench", "--profile", str(profile), "--out", str(run), "--quiet"]) == 0  # without the flag
    assert json.loads((run / "models" / "shortgpt.json").read_text())["code"]["source_digest"] == "newer"


def test_a_method_that_refuses_its_target_is_a_failure_and_the_others_still_run(tmp_path, tiny_folder, capsys):
    profile, run = tiny_profile(tmp_path, tiny_folder), tmp_path / "run"
    # rule-based merging leaves the bottom half alone: 90% of the layers is out of its reach
    profile.write_text(profile.read_text() + '[[methods]]\nname = "rule-merge"\nlabel = "rule-merge"\ntarget = 0.9\n'
                       '[[methods]]\nname = "shortgpt"\nlabel = "shortgpt"\ntarget = 0.25\n')
    assert main(["bench", "--profile", str(profile), "--out", str(run), "--quiet"]) == 1
    assert "FAILED rule-merge/pruning: " in capsys.readouterr().out
    assert (run / "results" / "shortgpt" / "flops.json").is_file()  # the method after it was measured
    assert not (run / "models" / "rule-merge.json").exists()
    assert json.loads((run / "run.json").read_text())["finished"] is None  # a failure leaves the run unfinished


def test_the_commit_is_dirty_only_where_the_measuring_code_changed(tmp_path):
    import subprocess

    from laco.provenance import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "laco").mkdir()
    (tmp_path / "laco" / "core.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("docs\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = git_commit(tmp_path / "laco")
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "README.md").write_text("other docs\n")
    assert git_commit(tmp_path / "laco") == clean  # an edit outside the measuring packages
    (tmp_path / "laco" / "core.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "laco") == clean + "-dirty"
