"""The base install is the judging layer: `laco report`, `laco compare` and `laco gate` work without
torch, transformers or lm-eval, and a command that needs an extra says which, in one line.

Each `laco` runs as a process in which the extras' modules cannot be imported (a finder first on
`sys.meta_path` refuses them, as a fresh `pip install laco-bench` without extras would), on a copy of
the committed example run outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from laco.cli import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_RUN = ROOT / "tests" / "fixtures" / "runs" / "example-smollm2"
# Every module of the extras, and what they pull in: none may be needed to judge a run.
NOT_INSTALLED = sorted({*EXTRAS["bench"], "tokenizers", "huggingface_hub", "datasets", "evaluate"})

WITHOUT = """
import sys

BLOCKED = set(sys.argv[1].split(","))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
from laco.cli import main

code = main(sys.argv[2:])
loaded = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
assert not loaded, f"imported {loaded}"
sys.exit(code)
"""


def laco_without(blocked: list[str], *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", WITHOUT, ",".join(blocked), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("elsewhere") / "example-smollm2"
    shutil.copytree(EXAMPLE_RUN, copy)
    return copy


def test_report_without_the_extras(run):
    proc = laco_without(NOT_INSTALLED, "report", run, "--out", run.parent / "reports", cwd=run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (run.parent / "reports" / "example-smollm2.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Claims at the paper's conditions", "## Findings", "## Verdicts in full"]
    assert "## LaCo search trace" in headings
    assert (run.parent / "reports" / "example-smollm2" / "retention.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_without_the_extras(run):
    proc = laco_without(NOT_INSTALLED, "compare", run, run, cwd=run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]  # a run against itself: no regression
    assert "| rule-paper | perplexity " in proc.stdout


def test_gate_without_the_extras(run):
    proc = laco_without(NOT_INSTALLED, "gate", run, cwd=run.parent)
    # the example run fails one gated claim on purpose: the gate judged it, it did not crash
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "`profile:laco-ppl-within-3x-dense` | laco-paper" in proc.stdout and "**FAIL**" in proc.stdout


@pytest.mark.parametrize("command,blocked,extra", [
    (["prune", "tiny", "--out", "out"], NOT_INSTALLED, "prune"),
    (["prune", "--list-methods"], ["torch"], "prune"),
    (["post-train", "tiny", "--out", "out", "--recipe", "lora"], ["peft"], "prune"),  # LoRA's library is prune's
    (["bench", "--profile", "smoke", "--out", "run"], NOT_INSTALLED, "bench"),
    (["bench", "--profile", "smoke", "--out", "run"], ["lm_eval"], "bench"),  # prune's modules are there
    (["nightly", "--profile", "smoke"], ["yaml"], "bench"),
    (["baselines-compare", "--model", "tiny"], ["transformers"], "bench"),
])
def test_a_command_without_its_extra_is_one_line_naming_it(command, blocked, extra, tmp_path):
    proc = laco_without(blocked, *command, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"laco {command[0]} needs the {extra!r} extra: pip install 'laco-bench[{extra}]'"]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_extras_name_what_pyproject_declares():
    """EXTRAS (what the CLI checks) and pyproject's optional dependencies tell the same story."""
    from laco.config import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirement = lambda text: text.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()  # noqa: E731
    distributions = {"yaml": "pyyaml", "lm_eval": "lm-eval"}
    prune = {requirement(r) for r in project["optional-dependencies"]["prune"]}
    bench = {requirement(r) for r in project["optional-dependencies"]["bench"]}
    assert {distributions.get(m, m) for m in EXTRAS["prune"]} == prune
    assert {distributions.get(m, m) for m in EXTRAS["bench"]} - prune == bench - {"laco-bench"}
    base = {requirement(r) for r in project["dependencies"]}
    assert not base & (prune | bench), "the base install must not need an extra's package"
