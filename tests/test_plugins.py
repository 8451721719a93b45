"""Methods as plugins: a package outside this project registers a pruner under the entry-point group
`laco_bench.pruners`, and `laco prune --method`, `--list-methods`, a bench profile and the report use
it like a shipped one. The package installed here is the README's own example (its code blocks are
read from README.md), laid out as pip installs it: the module beside a `*.dist-info` folder whose
entry_points.txt declares the method. Each `laco` runs as a process with that folder on its path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from laco.config import tomllib

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Your own method as a plugin"


def readme_example() -> tuple[dict[str, str], str]:
    """(entry points {name: "module:function"}, the module's source) from the README's plugin section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").split(SECTION, 1)[1].split("\n## ", 1)[0]
    toml_block = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    python_block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    return tomllib.loads(toml_block)["project"]["entry-points"]["laco_bench.pruners"], python_block


def install(site: Path, package: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """What `pip install --target site` leaves of a package: its modules and its dist-info."""
    site.mkdir(exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    info = site / f"{package.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("[laco_bench.pruners]\n" + "\n".join(lines) + "\n")
    return site


def laco(site: Path, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "laco", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def site(tmp_path) -> Path:
    entry_points, source = readme_example()
    return install(tmp_path / "site", "my-pruner", entry_points, {"my_pruner": source})


def test_the_readme_example_declares_one_method():
    entry_points, source = readme_example()
    assert entry_points == {"drop-top": "my_pruner:prune"} and "def prune(" in source
    assert len(source.splitlines()) <= 22  # the README promises an example of about 20 lines


def test_list_methods_shows_the_plugin_beside_the_shipped_ones(site):
    from laco.pruners import PRUNERS, SUMMARIES

    proc = laco(site, "prune", "--list-methods")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert f"{'laco':<11} {SUMMARIES['laco']}" in lines
    plugin = lines.index("drop-top    Delete the top layers until the target is met, never the lowest keep_bottom. "
                         "[plugin of my-pruner]")
    assert lines[plugin + 1].strip() == "params: keep_bottom=1"
    names = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert names == [*PRUNERS, "drop-top"]


def test_laco_prune_runs_the_plugin_with_its_parameter(site, tiny_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    from laco.record import record_fingerprint

    out = tmp_path / "out"
    proc = laco(site, "prune", tiny_folder, "--method", "drop-top", "--target-layers", 3, "--param", "keep_bottom=5",
                "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "drop-top: 8 -> 5 layers" in proc.stdout  # keep_bottom=5 overrules the target of 3
    record = json.loads((out / "laco.json").read_text())
    assert record["method"] == "drop-top" and record["config"] == {"keep_bottom": 5}
    assert record["target"] == {"layers": 3} and record["n_layers_after"] == 5
    assert record["fingerprint"] == record_fingerprint(record)
    pruned = AutoModelForCausalLM.from_pretrained(out)
    dense = AutoModelForCausalLM.from_pretrained(tiny_folder)
    assert pruned.config.num_hidden_layers == 5
    for kept, original in zip(pruned.model.layers, dense.model.layers[:5]):  # the bottom five, unchanged
        assert torch.equal(kept.mlp.down_proj.weight, original.mlp.down_proj.weight)
    assert sum(p.numel() for p in pruned.parameters()) == record["parameters"]["after"]


PROFILE = """seed = 0
measurements = ["perplexity"]

[model]
spec = "{spec}"

[[methods]]
name = "drop-top"
target = 0.25

[perplexity]
window = 16
n_windows = 2
batch_size = 2
lm_eval_wikitext = false
"""


def test_a_profile_benches_the_plugin_and_the_report_shows_it(site, tiny_folder, tmp_path, data_dir):
    profile = tmp_path / "fixture.toml"
    profile.write_text(PROFILE.format(spec=tiny_folder))
    run = tmp_path / "run"
    bench = laco(site, "bench", "--profile", profile, "--out", run, "--data-dir", data_dir, "--quiet", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr[-3000:]
    model = json.loads((run / "models" / "drop-top.json").read_text())
    assert model["method"] == "drop-top" and model["record"]["method"] == "drop-top"
    assert model["record"]["target"] == {"ratio": 0.25, "layers": model["record"]["n_layers_after"]}
    assert model["record"]["n_layers_after"] < 8
    for key in ("dense", "drop-top"):
        result = json.loads((run / "results" / key / "perplexity.json").read_text())
        assert result["status"] == "ok", result["reason"]
    report = laco(site, "report", run, "--out", tmp_path / "reports", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    [markdown] = (tmp_path / "reports").glob("*.md")
    rows = [line for line in markdown.read_text().splitlines() if line.startswith("| drop-top ")]
    assert rows, "the report has no row of the plugin's model"


def test_a_plugin_that_does_not_import_is_one_line_and_the_shipped_methods_work(tmp_path):
    from laco.pruners import PRUNERS

    site = install(tmp_path / "site", "broken-plugin", {"broken": "broken_pruner:prune"},
                   {"broken_pruner": "import a_module_that_is_not_installed\n"})
    listing = laco(site, "prune", "--list-methods")  # imports every shipped pruner to read its parameters
    assert listing.returncode == 0
    assert listing.stderr.splitlines() == [
        "laco: pruning method 'broken' of package broken-plugin left out: it does not load "
        "(ModuleNotFoundError: No module named 'a_module_that_is_not_installed')"]
    assert [line.split()[0] for line in listing.stdout.splitlines() if not line.startswith(" ")] == list(PRUNERS)


def test_a_name_already_taken_is_one_line_naming_the_package(tmp_path):
    entry_points, source = readme_example()
    site = install(tmp_path / "site", "my-pruner", entry_points, {"my_pruner": source})
    install(site, "clash-plugin", {"laco": "my_pruner:prune", "drop-top": "my_pruner:prune"}, {})
    listing = laco(site, "prune", "--list-methods")
    assert listing.returncode == 0
    errors = listing.stderr.splitlines()
    assert "laco: pruning method 'laco' of package clash-plugin left out: the name is taken by a shipped method" in errors
    # which of the two packages declaring drop-top is found first is up to the file system
    clash = [line for line in errors if "'drop-top'" in line]
    assert len(errors) == 2 and len(clash) == 1
    assert re.fullmatch(r"laco: pruning method 'drop-top' of package (clash-plugin|my-pruner) left out: "
                        r"the name is taken by package (my-pruner|clash-plugin)", clash[0])
    lines = listing.stdout.splitlines()
    from laco.pruners import SUMMARIES

    assert f"{'laco':<11} {SUMMARIES['laco']}" in lines
    assert sum(line.startswith("drop-top ") for line in lines) == 1
