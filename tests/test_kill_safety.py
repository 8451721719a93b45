"""Kill-safety: real `laco` processes stopped by SIGKILL (no cleanup handler runs) at the named points
of `laco.faults` and at random moments, then run again.

What must hold after every kill: no output is half-written (a `laco prune` output folder is absent
until it is complete; every JSON file of a bench run parses), the temporaries a kill leaves are
removed by the next run, and the next run of the same command finishes. A bench run resumes: a
result already written is never measured again (its bytes stay the same), so a kill loses at most
the measurement that was in flight.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

from laco.faults import ENV as KILL_AT
from run_fixtures import SMALL_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
KILLED = -signal.SIGKILL  # the return code of a process that SIGKILL stopped
PRUNE_SETTINGS = ["--merge", "paper", "-C", "3", "-T", "0.3"]  # tiny Llama: 4 search steps, layers removed


def laco_env(kill_at: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop(KILL_AT, None)
    if kill_at:
        env[KILL_AT] = kill_at
    return env


def laco(args: list, cwd: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "laco", *map(str, args)], cwd=cwd, env=laco_env(kill_at),
                          capture_output=True, text=True, timeout=600)


def laco_killed_at_random(args: list, cwd: Path, log: Path, ready, max_delay: float) -> tuple[int, float]:
    """Start `laco ARGS`, wait until `ready()` (or the process ends), wait a random delay up to
    `max_delay` seconds, and SIGKILL it if it still runs. Returns (return code, delay)."""
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "laco", *map(str, args)], cwd=cwd, env=laco_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 600
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        delay = random.uniform(0, max_delay)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=600), delay


def temporaries(folder: Path) -> list[Path]:
    """What an interrupted atomic write leaves: `.NAME.tmp-*` folders and `.NAME.*.tmp` files."""
    return sorted(p for p in folder.rglob(".*") if ".tmp" in p.name or ".old-" in p.name)


def check_reloads(out: Path) -> dict:
    """Stock transformers reloads the output; its shape and parameter count are those laco.json records."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((out / "laco.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == len(model.model.layers) == record["n_layers_after"]
    assert record["n_layers_after"] < record["n_layers_before"], "the settings must remove layers"
    assert sum(p.numel() for p in model.parameters()) == record["parameters"]["after"]
    with torch.no_grad():
        logits = model(**tokenizer(["a short text"], return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    return record


# --- laco prune -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kill", ["collapse:step@3", "save:written", "random"])
def test_prune_killed_leaves_no_output_and_the_rerun_completes(tiny_folder, tmp_path, kill):
    work = tmp_path / "work"
    work.mkdir()
    out = work / "pruned"
    args = ["prune", tiny_folder, "--out", out, *PRUNE_SETTINGS]
    if kill == "random":  # by time: after the search's progress bar appeared, during the search or the save
        log = tmp_path / "stderr.log"
        code, delay = laco_killed_at_random(args, work, log, lambda: b"LaCo" in log.read_bytes(), max_delay=0.5)
        where = f"killed {delay:.2f}s after the search began (rc {code})"
        assert code in (KILLED, 0), f"{where}: {log.read_text()[-2000:]}"
        if out.exists():  # the kill came after the rename into place (or the process had ended): complete
            assert (out / "laco.json").is_file() and temporaries(work) == [], where
            check_reloads(out)
            return
    else:
        killed = laco([*args, "--quiet"], work, kill_at=kill)
        where = f"killed at {kill}"
        assert killed.returncode == KILLED, f"{where}: the kill point was not reached: {killed.stderr[-2000:]}"
        left = temporaries(work)
        if kill == "collapse:step@3":  # killed before anything was written
            assert left == [], where
        else:  # killed after the weights were written under the temporary name, before the rename
            assert [p.name.split(".tmp-")[0] for p in left] == [".pruned"], where
            assert {"model.safetensors", "config.json", "laco.json"} <= {p.name for p in left[0].iterdir()}
    assert not out.exists(), f"{where}: the output folder exists before the command finished"
    assert set(work.iterdir()) == set(temporaries(work)), f"{where}: something besides temporaries was written"

    rerun = laco([*args, "--quiet"], work)
    assert rerun.returncode == 0, f"{where}, then the rerun failed: {rerun.stderr[-2000:]}"
    assert temporaries(work) == [], f"{where}: the rerun left the temporaries in place"
    assert [p.name for p in work.iterdir()] == ["pruned"]
    record = check_reloads(out)
    assert record["method"] == "laco" and record["config"]["C"] == 3 and record["config"]["T"] == 0.3


@pytest.mark.smollm2
def test_smollm2_prune_killed_while_saving(tmp_path):
    """Killed at a random moment of the save (the temporary folder exists, the rename has not
    happened yet): the output is absent, and the rerun removes the half-written folder and finishes."""
    import shutil

    from laco import LacoError
    from laco.loading import resolve

    try:
        resolve("smollm2-135m")
    except LacoError as exc:
        pytest.skip(str(exc))
    work = tmp_path / "work"
    work.mkdir()
    out = work / "smol"
    args = ["prune", "smollm2-135m", "--merge", "reference", "-C", "3", "-L", "24", "--out", out]
    saving = lambda: any(work.glob(".smol.tmp-*"))  # noqa: E731
    # a kill that lands after the rename (the save of 500 MB takes about a second here) is retried sooner
    for max_delay in (0.6, 0.2, 0.05):
        code, delay = laco_killed_at_random(args, work, tmp_path / "stderr.log", saving, max_delay)
        where = f"killed {delay:.2f}s after the save began (rc {code})"
        assert code in (KILLED, 0), f"{where}: {(tmp_path / 'stderr.log').read_text()[-2000:]}"
        if not out.exists():
            break
        assert (out / "laco.json").is_file() and temporaries(work) == [], f"{where}: incomplete output"
        shutil.rmtree(out)
    else:
        pytest.fail("every kill came after the rename: the save was not interrupted")
    assert code == KILLED and temporaries(work), f"{where}: the temporary folder was expected to be there"
    rerun = laco([*args, "--quiet"], work)
    assert rerun.returncode == 0, f"{where}, then the rerun failed: {rerun.stderr[-2000:]}"
    assert temporaries(work) == [] and [p.name for p in work.iterdir()] == ["smol"], where
    record = check_reloads(out)
    assert record["n_layers_before"] == 30 and record["merge_mode"] == "reference"


# --- laco bench --------------------------------------------------------------------------------------

PER_MODEL = ["perplexity", "flops", "accuracy"]
MODELS = ["dense", "laco", "shortgpt"]  # the order the runner measures them in


def bench_profile(tiny_folder: Path) -> str:
    return f"""
seed = 0
measurements = {json.dumps(PER_MODEL)}

[model]
spec = "{tiny_folder}"

[[methods]]
name = "laco"
params = {{ merge = "paper", C = 3, T = 0.3 }}

[[methods]]
name = "shortgpt"
target = "match:laco"

{SMALL_SETTINGS}
[accuracy.tasks]
piqa = {{ limit = 2 }}

[throughput]  # the workload whose FLOPs are counted
batch_size = 1
input_len = 8
output_len = 2
"""


def snapshot(run: Path) -> dict[str, bytes]:
    """Every result and model record, by its path in the run; each must be complete JSON."""
    files = {}
    for path in sorted(run.rglob("*.json")):
        if path.name.startswith("."):
            continue
        text = path.read_bytes()
        json.loads(text)  # a torn file fails here
        files[str(path.relative_to(run))] = text
    return files


def results_of(files: dict[str, bytes]) -> set[str]:
    return {k.removeprefix("results/").removesuffix(".json") for k in files if k.startswith("results/")}


def test_bench_killed_at_every_point_resumes_without_measuring_twice(tiny_folder, tmp_path, data_dir):
    profile = tmp_path / "tiny.toml"
    profile.write_text(bench_profile(tiny_folder))
    run = tmp_path / "run"
    args = ["bench", "--profile", profile, "--out", run, "--data-dir", data_dir, "--quiet"]
    every = {f"{m}/{n}" for m in MODELS for n in PER_MODEL}
    before: dict[str, bytes] = {}
    left_before: list[Path] = []
    measured: list[tuple[str, set[str]]] = []  # (step, results written by it): printed for the record

    def step(name: str, kill_at: str | None = None, expect_new: set[str] | None = None, random_kill: bool = False):
        nonlocal before, left_before
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
        if random_kill:  # by time: while the last model's results are being measured
            log = tmp_path / f"{name}.log"
            code, delay = laco_killed_at_random(args, tmp_path, log, lambda: (run / "results" / "shortgpt").is_dir(),
                                                max_delay=2.0)
            name = f"{name} ({delay:.2f}s after shortgpt's first result)"
            assert code in (KILLED, 0), f"{name}: {log.read_text()[-2000:]}"
        else:
            proc = laco(args, tmp_path, kill_at=kill_at)
            assert proc.returncode == (KILLED if kill_at else 0), f"{name}: {proc.stderr[-3000:]}"
        after = snapshot(run)  # (a) nothing torn
        for key, text in before.items():  # (b) nothing written before is measured or rewritten again
            if key.startswith(("results/", "models/")):
                assert after.get(key) == text, f"{name}: {key} was rewritten"
        assert not set(map(str, left_before)) & set(map(str, temporaries(run))), f"{name}: old temporaries left"
        new = results_of(after) - results_of(before)
        for key in new:  # written by this process, as its provenance says
            started = json.loads(after[f"results/{key}.json"])["provenance"]["started"]
            assert datetime.fromisoformat(started) >= start, f"{name}: {key} started {started}, before the step"
        if expect_new is not None:
            assert new == expect_new, f"{name}: measured {sorted(new)}, expected {sorted(expect_new)}"
        if kill_at:
            assert json.loads(after["run.json"])["finished"] is None, f"{name}: a killed run is not finished"
        measured.append((name, new))
        before, left_before = after, temporaries(run)
        return after

    # killed right after the second result was written
    step("bench:written@2", "bench:written@2", {"dense/perplexity", "dense/flops"})
    # resumed, killed when the third measurement of this process (laco/flops) was done, not yet written
    files = step("bench:measuring@3", "bench:measuring@3", {"dense/accuracy", "laco/perplexity"})
    assert "models/laco.json" in files and (run / "weights" / "laco" / "laco.json").is_file()
    # resumed: laco reloads from its weights (its record stays byte-identical: not pruned again),
    # the measurement in flight is measured, then killed after shortgpt was pruned, before it was saved
    files = step("bench:pruned", "bench:pruned", {"laco/flops", "laco/accuracy"})
    assert "models/shortgpt.json" not in files and not (run / "weights" / "shortgpt").exists()
    # killed after shortgpt's weights were written under their temporary name, before the rename
    step("save:written", "save:written", set())
    half = [p for p in temporaries(run) if p.parent.name == "weights"]
    assert [p.name.split(".tmp-")[0] for p in half] == [".shortgpt"] and not (run / "weights" / "shortgpt").exists()
    # killed at a random moment while shortgpt is measured; the half weights folder is gone
    step("random", random_kill=True)
    assert not (run / "weights" / half[0].name).exists()
    # the last run measures what is missing and finishes
    files = step("complete", expect_new=every - results_of(before))
    assert results_of(files) == every and temporaries(run) == []
    assert json.loads(files["run.json"])["finished"] is not None
    for key in every:
        doc = json.loads(files[f"results/{key}.json"])
        assert doc["status"] == "ok", f"{key}: {doc['reason']}"
    assert sum(len(new) for _, new in measured) == len(every), "every result was written exactly once"
    print("\n".join(f"{name}: wrote {sorted(new)}" for name, new in measured))
