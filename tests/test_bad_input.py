"""Bad input, as one table: every row is a real `laco` command that must be refused with exactly one
line on stderr that names what is wrong, exit code 2, and nothing written: the folders the command
reads and writes are as they were (no output folder, no run folder, no temporaries).

Rows run through `laco.cli.main` in this process (stderr captured at the file descriptor), the
marked ones as a `python -m laco` process, as a user runs them. `{ws}` is a folder of inputs shared
by the rows, `{tmp}` the row's own working folder (the command's current directory).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import pytest

from laco.cli import main
from run_fixtures import QUICK_PROFILE

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("LACO_DATA_DIR") or ROOT.parent / "shared" / "data")


@dataclass
class Bad:
    id: str
    argv: list[str]
    message: str  # a regex the one line must match: it names what is wrong
    process: bool = False  # run as `python -m laco` rather than in this process
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path, pytest.MonkeyPatch], None] | None = None  # row state under {tmp}; may skip


def prune(model: str, *more: str, out: str = "out") -> list[str]:
    return ["prune", model, "--out", out, "--quiet", *more]


def post_train(model: str, recipe: str, *more: str, out: str = "out") -> list[str]:
    return ["post-train", model, "--out", out, "--recipe", recipe, "--quiet", *more]


def bench(profile: str, *more: str) -> list[str]:
    return ["bench", "--profile", profile, "--out", "run", "--quiet", *more]


# -- row preparations (their state lives in the row's own folder) -------------------------------------

def unreadable(path: Path) -> None:
    """chmod 000, or skip where that does not stop reads (root)."""
    path.chmod(0)
    try:
        os.listdir(path)
    except PermissionError:
        return
    path.chmod(0o755)
    pytest.skip("running as root: chmod 000 does not stop reads (the corrupt-data rows cover this class)")


def unreadable_data_dir(tmp: Path, monkeypatch) -> None:
    (tmp / "data" / "wikitext").mkdir(parents=True)
    unreadable(tmp / "data")


def read_only_parent(tmp: Path, monkeypatch) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    try:
        (tmp / "ro" / "probe").touch()
    except PermissionError:
        return
    (tmp / "ro" / "probe").unlink()
    (tmp / "ro").chmod(0o755)
    pytest.skip("running as root: a read-only folder is writable anyway (the parent-is-a-file row covers this class)")


def disk_full(path_part: str):
    """The disk fills up while a file whose path contains `path_part` is written: safetensors
    writes part of it, a JSON write fails at its flush to disk."""
    def patch(tmp: Path, monkeypatch) -> None:
        import transformers.modeling_utils as modeling

        def no_space(filename: str | Path):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

        def save_file(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\0" * 4096)  # the first blocks made it to disk
            raise no_space(filename)

        real_fsync = os.fsync

        def fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path_part in path:
                raise no_space(path)
            return real_fsync(fd)

        if path_part == "/results/" and not (DATA_DIR / "MANIFEST.md").is_file():
            pytest.skip(f"evaluation data not found at {DATA_DIR} (set LACO_DATA_DIR)")
        monkeypatch.setattr(modeling, "safe_save_file", save_file)
        monkeypatch.setattr(os, "fsync", fsync)
    return patch


def needs_data(tmp: Path, monkeypatch) -> None:
    if not (DATA_DIR / "MANIFEST.md").is_file():
        pytest.skip(f"evaluation data not found at {DATA_DIR} (set LACO_DATA_DIR)")


# -- the table -----------------------------------------------------------------------------------------

TINY = "{ws}/tiny"
ROWS = [
    # flags out of range or malformed
    Bad("T-above-1", prune(TINY, "-T", "1.5"), r"T must lie in \(0, 1\], got 1\.5"),
    Bad("C-below-2", prune(TINY, "-C", "1"), r"C must be at least 2 .*got 1"),
    Bad("I-negative", prune(TINY, "-I", "-1"), r"I must be at least 1, got -1"),
    Bad("L-negative", prune(TINY, "-L", "-1"), r"L must be at least 0, got -1"),
    Bad("H-beyond-depth", prune(TINY, "-H", "12"), r"H=12 is beyond the model's 8 layers"),
    Bad("target-ratio-above-1", prune(TINY, "--target-ratio", "1.2"), r"target ratio must lie in \(0, 1\), got 1\.2"),
    Bad("target-layers-0", prune(TINY, "--target-layers", "0"), r"target of 0 layers must lie in 1\.\.8"),
    Bad("two-targets", prune(TINY, "--target-layers", "4", "--target-ratio", "0.2"),
        r"argument --target-ratio: not allowed with argument --target-layers"),
    Bad("unknown-method", prune(TINY, "--method", "lacoo"), r"unknown pruning method 'lacoo'; did you mean 'laco'\?"),
    Bad("memory-size-not-a-size", prune(TINY, "--max-memory", "lots"), r"not a memory size: 'lots'"),
    Bad("memory-bound-below-one-layer", prune(TINY, "--stream", "--max-memory", "100kB"),
        r"a memory bound of 100 kB \(--max-memory\) is below what laco needs layer by layer on .*one decoder layer is 148 kB"),
    Bad("memory-llm-pruner-above-the-bound", prune(TINY, "--method", "llm-pruner", "--target-ratio", "0.2", "--max-memory",
        "50MB"), r"llm-pruner cannot prune layer by layer and needs .*\(weights .*, gradients .*\).* bound is 50 MB"),
    Bad("param-without-equals", prune(TINY, "--param", "T"), r"--param takes KEY=VALUE, got 'T'"),
    Bad("param-unknown-key", prune(TINY, "--param", "X=1"), r"laco does not take X \(its parameters: merge, "),
    Bad("param-of-another-method", prune(TINY, "--method", "shortgpt", "--target-ratio", "0.2", "--param", "T=0.3"),
        r"shortgpt does not take T"),
    Bad("flag-not-a-number", prune(TINY, "-C", "abc"), r"argument -C: invalid int value: 'abc'", process=True),
    Bad("merge-not-a-choice", prune(TINY, "--merge", "bogus"), r"argument --merge: invalid choice: 'bogus'"),
    Bad("unknown-dtype", prune(TINY, "--dtype", "float8"), r"unknown dtype 'float8'"),
    Bad("no-out", ["prune", TINY, "--quiet"], r"give a MODEL and --out DIR"),
    Bad("unknown-command", ["prunee", TINY], r"unknown command 'prunee'; did you mean 'prune'\?"),
    # missing or corrupt model files
    Bad("weights-truncated-in-header", prune("{ws}/truncated-header"),
        r"cannot load the weights of .*truncated-header: .*invalid header length", process=True),
    Bad("weights-truncated-in-data", prune("{ws}/truncated-data"),
        r"cannot load the weights of .*truncated-data: .*file not fully covered"),
    Bad("gguf-that-is-not-gguf", prune("{ws}/fake.gguf"), r"not a GGUF file .*fake\.gguf"),
    Bad("empty-folder", prune("{ws}/empty"), r"model folder has no config\.json: .*empty"),
    Bad("folder-without-config", prune("{ws}/no-config"), r"model folder has no config\.json: .*no-config"),
    Bad("folder-without-weights", prune("{ws}/no-weights"),
        r"cannot load the weights of .*no-weights: .*no file named model\.safetensors"),
    Bad("folder-without-tokenizer", prune("{ws}/no-tokenizer"), r"cannot load the tokenizer of .*no-tokenizer"),
    Bad("model-not-found", prune("{ws}/no-such-model"), r"model not found: .*no-such-model"),
    Bad("synthetic-unknown-name", prune("synthetic:llama3-8b"), r"unknown synthetic model 'llama3-8b'; known: llama2-7b, "),
    Bad("hub-id-offline-not-cached", prune("nowhere-org/nowhere"),
        r"model not found: nowhere-org/nowhere is not .* in the hub cache, and HF_HUB_OFFLINE is set",
        env={"HF_HUB_OFFLINE": "1"}),
    # data and calibration
    Bad("calibration-jsonl-row-malformed", prune(TINY, "--calibration", "{ws}/broken.jsonl", "--calibration-field", "text"),
        r"broken\.jsonl:2: not JSON"),
    Bad("calibration-jsonl-field-missing", prune(TINY, "--calibration", "{ws}/rows.jsonl", "--calibration-field", "page"),
        r"rows\.jsonl:1: no text field 'page'"),
    Bad("calibration-jsonl-without-field", prune(TINY, "--calibration", "{ws}/rows.jsonl"),
        r"rows\.jsonl is JSONL: name the field .* --calibration-field"),
    Bad("calibration-empty", prune(TINY, "--calibration", "{ws}/empty.txt"), r"calibration file is empty: .*empty\.txt"),
    Bad("calibration-binary", prune(TINY, "--calibration", "{ws}/tiny/model.safetensors"),
        r"calibration file is not UTF-8 text: .*model\.safetensors"),
    Bad("calibration-missing", prune(TINY, "--calibration", "{ws}/none.txt"), r"calibration file not found: .*none\.txt"),
    Bad("calibration-docs-out-of-range", prune(TINY, "--calibration-docs", "5:2"),
        r"wikitext-2 test documents 5:2 out of range"),
    Bad("data-dir-without-wikitext", prune(TINY, "--calibration-docs", "0:2"),
        r"wikitext/wikitext-2-raw-v1_test\.jsonl not found under .*empty", env={"LACO_DATA_DIR": "{ws}/empty"}),
    Bad("data-dir-wikitext-corrupt", prune(TINY, "--calibration-docs", "0:2"),
        r"corrupt-data/wikitext/wikitext-2-raw-v1_test\.jsonl:2: not a JSON row with a 'page' field",
        env={"LACO_DATA_DIR": "{ws}/corrupt-data"}),
    Bad("data-dir-unreadable", bench("{ws}/quick.toml", "--data-dir", "{tmp}/data"), r"data dir not readable: .*data",
        prepare=unreadable_data_dir),
    Bad("data-dir-unreadable-calibration", prune(TINY, "--calibration-docs", "0:2"),
        r"Permission denied: .*data/wikitext/wikitext-2-raw-v1_test\.jsonl", env={"LACO_DATA_DIR": "{tmp}/data"},
        prepare=unreadable_data_dir),
    Bad("data-dir-not-a-folder", bench("{ws}/quick.toml", "--data-dir", "{ws}/empty.txt"),
        r"data dir not found: .*empty\.txt"),
    # outputs
    Bad("output-exists", prune(TINY, out="{ws}/existing"), r"output exists: .*existing \(pass --force to replace it\)"),
    Bad("output-parent-is-a-file", prune(TINY, out="{ws}/empty.txt/out"),
        r"cannot create the output .*out: .*empty\.txt is not a folder"),
    Bad("output-parent-read-only", prune(TINY, out="{tmp}/ro/out"), r"cannot create the output .*: .*ro is not writable",
        prepare=read_only_parent),
    Bad("disk-full-writing-weights", prune(TINY, "-T", "0.3", out="{tmp}/out"),
        r"No space left on device: .*\.out\.tmp-.*/model\.safetensors", prepare=disk_full("/model.safetensors")),
    Bad("disk-full-writing-a-result", bench("{ws}/quick.toml", "--data-dir", str(DATA_DIR)),
        r"No space left on device: .*/results/dense/\.perplexity\.json\..*\.tmp", prepare=disk_full("/results/")),
    Bad("run-folder-is-a-file", ["bench", "--profile", "{ws}/quick.toml", "--out", "{ws}/empty.txt", "--quiet"],
        r"run directory exists and is not a folder: .*empty\.txt"),
    # profiles
    Bad("profile-unknown-key", bench("{ws}/typo.toml"), r"typo\.toml: unknown key 'measurments'", process=True),
    Bad("profile-wrong-type", bench("{ws}/wrong-type.toml"), r"wrong-type\.toml: perplexity\.window: .*valid integer.*'big'"),
    Bad("profile-missing-model-spec", bench("{ws}/no-spec.toml"), r"no-spec\.toml: missing key 'model\.spec'"),
    Bad("profile-method-not-registered", bench("{ws}/not-registered.toml"),
        r"methods\[0\]\.name: pruning method 'lacoo' is not registered \(did you mean 'laco'\?\)"),
    Bad("profile-unknown-prune-dtype", bench("{ws}/prune-dtype.toml"),
        r"prune-dtype\.toml: model\.prune_dtype: Input should be 'same', 'float32', 'float16' or 'bfloat16' \(got 'fp32'\)"),
    Bad("profile-not-toml", bench("{ws}/not-toml.toml"), r"not-toml\.toml: not valid TOML"),
    Bad("profile-missing", bench("{ws}/none.toml"), r"profile file not found: .*none\.toml"),
    Bad("profile-unknown-name", bench("smokee"), r"unknown profile 'smokee'; did you mean 'smoke'\?"),
    Bad("profile-model-missing", bench("{ws}/missing-model.toml"), r"model not found: .*no-such-model"),
    Bad("profile-post-train-unknown-recipe", bench("{ws}/post-recipe.toml"),
        r"post-recipe\.toml: methods\[0\]\.post_train: unknown post-training recipe 'contine'; did you mean 'continue'\?"),
    Bad("profile-post-train-param-not-taken", bench("{ws}/post-param.toml"),
        r"methods\[0\]\.post_train: recipe continue does not take rank \(its parameters: lr, "),
    Bad("profile-post-train-unknown-key", bench("{ws}/post-key.toml"), r"unknown key 'methods\.0\.post_train\.lr'"),
    Bad("profile-post-train-lr-zero", bench("{ws}/post-lr-zero.toml"),
        r"methods\[0\]\.post_train: recipe continue: lr: Input should be greater than 0 \(got 0\.0\)"),
    Bad("profile-post-train-lr-negative", bench("{ws}/post-lr-negative.toml"),
        r"methods\[0\]\.post_train: recipe lora: lr: Input should be greater than 0 \(got -0\.0001\)"),
    Bad("profile-post-train-text-overlaps-evaluation", bench("{ws}/post-overlap.toml", "--data-dir", str(DATA_DIR)),
        r"methods\[0\]\.post_train\.documents starts at document 0, but this run's perplexity reads documents up to "
        r"\d+: start at \d+ or later so training and evaluation share no text", prepare=needs_data),
    Bad("profile-source-unknown", bench("{ws}/source-unknown.toml"),
        r"methods\[0\]\.source: 'nowhere' must be the label of an earlier method entry \(earlier: none\)"),
    Bad("profile-source-later", bench("{ws}/source-later.toml"),
        r"methods\[0\]\.source: 'later' must be the label of an earlier method entry \(earlier: none\)"),
    Bad("profile-source-itself", bench("{ws}/source-itself.toml"),
        r"methods\[1\]\.source: 'self' must be the label of an earlier method entry \(earlier: drop\)"),
    Bad("profile-keep-weights-bad-value", bench("{ws}/keep-value.toml"),
        r"keep-value\.toml: run\.keep_pruned_weights: Input should be 'always' or 'while-measured' \(got 'while-measure'\)"),
    Bad("profile-keep-weights-typo", bench("{ws}/keep-typo.toml"), r"keep-typo\.toml: unknown key 'run\.keep_pruned_weight'"),
    Bad("bench-unknown-flag", ["bench", "--profiel", "{ws}/quick.toml"], r"unrecognized arguments: --profiel"),
    # claims and tolerances
    Bad("claims-typo", ["gate", "{ws}/tiny", "--claims", "{ws}/claims-typo.toml"],
        r"claims-typo\.toml: unknown key 'claim\.0\.statment'", process=True),
    Bad("tolerances-typo", ["compare", "{ws}/tiny", "{ws}/tiny", "--tolerances", "{ws}/tolerances-typo.toml"],
        r"tolerances-typo\.toml: unknown key 'memory\.peak_ration'"),
    Bad("tolerance-out-of-range", ["compare", "{ws}/tiny", "{ws}/tiny", "--tolerances", "{ws}/tolerance-range.toml"],
        r"tolerance-range\.toml: perplexity\.ratio: Input should be greater than or equal to 1 \(got 0\.5\)"),
    Bad("gate-not-a-run", ["gate", "{ws}/empty"], r"not a run directory \(no run\.json\): .*empty"),
    # post-training
    Bad("post-train-unknown-recipe", post_train(TINY, "contine"),
        r"unknown post-training recipe 'contine'; did you mean 'continue'\?", process=True),
    Bad("post-train-param-not-taken", post_train(TINY, "continue", "--param", "rank=8"),
        r"recipe continue does not take rank \(its parameters: lr, "),
    Bad("post-train-lr-zero", post_train(TINY, "lora", "--param", "lr=0"),
        r"recipe lora: lr: Input should be greater than 0 \(got 0\)"),
    Bad("post-train-lr-negative", post_train(TINY, "continue", "--param", "lr=-0.001"),
        r"recipe continue: lr: Input should be greater than 0 \(got -0\.001\)"),
    Bad("post-train-text-empty", post_train(TINY, "continue", "--train-file", "{ws}/empty.txt"),
        r"training file is empty: .*empty\.txt"),
    Bad("post-train-text-missing", post_train(TINY, "continue", "--train-file", "{ws}/none.txt"),
        r"training file not found: .*none\.txt"),
    Bad("post-train-text-overlaps-evaluation", post_train(TINY, "continue", "--train-docs", "0:4", "--exclude-docs", "2:3"),
        r"training documents 2 are evaluated \(--exclude-docs 2\)"),
    Bad("post-train-distill-without-a-pruning-record", post_train(TINY, "distill", "--train-file", "{ws}/rows.jsonl",
                                                                 "--train-field", "text"),
        r"distill needs a `laco prune` output"),
]
ROWS.append(Bad("gate-unknown-flag", ["gate", "{ws}/empty", "--clams", "x"], r"unrecognized arguments: --clams"))


# -- the run folder: one writer, and no setting that cannot fit in memory (bench.lock, bench.budget) ----

HOLDERS: list[subprocess.Popen] = []  # processes holding a row's run folder, stopped after the row


def run_with_results(tmp: Path) -> Path:
    """A run folder that already holds a result: a refusal must leave it as it was."""
    run = tmp / "run"
    (run / "results" / "dense").mkdir(parents=True)
    (run / "run.json").write_text('{"profile_name": "quick", "finished": null}\n')
    (run / "results" / "dense" / "perplexity.json").write_text('{"status": "ok", "values": {"windows": {"ppl": 3.0}}}\n')
    return run


def held_by_another_process(tmp: Path, monkeypatch) -> None:
    from test_run_lock import hold

    HOLDERS.append(hold(run_with_results(tmp), "writing", 120))


def results_before(tmp: Path, monkeypatch) -> None:
    run_with_results(tmp)


def disk_of_1kb(tmp: Path, monkeypatch) -> None:
    """The run folder's filesystem has 1 kB free (bench.plan reads it through shutil.disk_usage)."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))


HELD = r"run folder run is (in use|being written) by pid \d+ on host \S+ since \S+ \(holder\); "
ROWS += [
    Bad("second-writer", bench("{ws}/quick.toml"), HELD + r"laco bench stops \(pass --wait to wait for it\)",
        process=True, prepare=held_by_another_process),
    Bad("report-of-a-run-being-written", ["report", "run", "--out", "reports"],
        HELD + r"laco report does not read a run in progress \(pass --wait to wait for it\)", prepare=held_by_another_process),
    Bad("over-memory-setting", bench("{ws}/huge.toml"),
        r"perplexity\.lm_eval_max_length needs about 1\.31e\+05 GiB of memory \(lm-eval word perplexity, 8 × 1048576 tokens: "
        r".*\), more than this machine's memory \(\d.* GiB\): set a smaller one", prepare=results_before),
    Bad("over-memory-accuracy", bench("{ws}/huge-accuracy.toml"),
        r"accuracy\.max_length needs about 1\.31e\+05 GiB of memory \(lm-eval, 8 requests of up to 1048576 tokens: "
        r".*\), more than this machine's memory \(\d.* GiB\): set a smaller one", prepare=results_before),
    Bad("over-disk-pruned-copies", bench("{ws}/pruned-copies.toml"),
        r"this profile needs \d.* [km]B of disk for pruned copies, 1 kB free at .*work$", prepare=disk_of_1kb),
    # the tiny model has 4 attention heads and 2 key-value heads: 2 and 4 split both, 3 neither
    Bad("vllm-tensor-parallel-heads", bench("{ws}/tensor-parallel-3.toml"),
        r"vllm\.tensor_parallel_size 3 does not split the model's 4 attention heads \(2 key-value heads\) evenly, "
        r"which vLLM requires: sizes that do: 2, 4$", prepare=results_before),
    Bad("over-memory-generation", bench("{ws}/huge-generation.toml"),
        r"throughput\.input_len needs about 1\.64e\+04 GiB of memory \(1 × \(1048576 \+ 8\) tokens: .*KV cache .*\), "
        r"more than this machine's memory \(\d.* GiB\): set a smaller one", prepare=results_before),
]
PARAMS = [pytest.param(row, id=row.id) for row in ROWS]


@pytest.fixture(autouse=True)
def stop_holders():
    yield
    while HOLDERS:
        holder = HOLDERS.pop()
        holder.kill()
        holder.wait()


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The inputs the rows read; none of them may change."""
    from conftest import tiny_loaded

    ws = tmp_path_factory.mktemp("inputs")
    tiny = ws / "tiny"
    loaded = tiny_loaded("llama")
    loaded.model.save_pretrained(tiny)
    loaded.tokenizer.save_pretrained(tiny)
    weights = (tiny / "model.safetensors").read_bytes()
    for name, files, blob in [
        ("truncated-header", ["config.json", "tokenizer.json", "tokenizer_config.json"], weights[:1000]),
        ("truncated-data", ["config.json", "tokenizer.json", "tokenizer_config.json"], weights[: len(weights) // 2]),
        ("no-config", ["tokenizer.json", "tokenizer_config.json"], weights),
        ("no-tokenizer", ["config.json"], weights),
        ("no-weights", ["config.json", "tokenizer.json", "tokenizer_config.json"], None),
    ]:
        (ws / name).mkdir()
        for file in files:
            (ws / name / file).write_bytes((tiny / file).read_bytes())
        if blob is not None:
            (ws / name / "model.safetensors").write_bytes(blob)
    (ws / "empty").mkdir()
    (ws / "existing").mkdir()
    (ws / "existing" / "laco.json").write_text("{}\n")
    (ws / "fake.gguf").write_text("this is not a GGUF file\n")
    (ws / "empty.txt").write_text("\n \n")
    (ws / "rows.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    (ws / "broken.jsonl").write_text('{"text": "one"}\n{"text": two\n')
    (ws / "corrupt-data" / "wikitext").mkdir(parents=True)
    (ws / "corrupt-data" / "wikitext" / "wikitext-2-raw-v1_test.jsonl").write_text('{"page": "A"}\n{"page": "cut off\n')
    quick = QUICK_PROFILE.format(spec=tiny)
    (ws / "quick.toml").write_text(quick)
    (ws / "typo.toml").write_text(quick.replace("measurements", "measurments"))
    (ws / "wrong-type.toml").write_text(quick.replace("window = 16", 'window = "big"'))
    (ws / "no-spec.toml").write_text(quick.replace(f'spec = "{tiny}"', 'dtype = "float32"'))
    (ws / "not-registered.toml").write_text(quick + '[[methods]]\nname = "lacoo"\n')
    (ws / "pruned-copies.toml").write_text(quick + '[[methods]]\nname = "shortgpt"\ntarget = 0.25\n')
    (ws / "prune-dtype.toml").write_text(quick.replace("[model]\n", '[model]\nprune_dtype = "fp32"\n'))
    (ws / "not-toml.toml").write_text(quick.replace("[model]", "[model"))
    (ws / "keep-value.toml").write_text(quick + '[run]\nkeep_pruned_weights = "while-measure"\n')
    (ws / "keep-typo.toml").write_text(quick + '[run]\nkeep_pruned_weight = "while-measured"\n')
    drop = '[[methods]]\nname = "drop"\ntarget = 0.3\n'
    for name, entry in [("post-recipe", 'post_train = { recipe = "contine" }'),
                        ("post-param", 'post_train = { recipe = "continue", params = { rank = 8 } }'),
                        ("post-key", 'post_train = { recipe = "continue", lr = 1e-4 }'),
                        ("post-lr-zero", 'post_train = { recipe = "continue", params = { lr = 0.0 } }'),
                        ("post-lr-negative", 'post_train = { recipe = "lora", params = { lr = -1e-4 } }'),
                        ("post-overlap", 'post_train = { recipe = "continue", documents = [0, 2] }'),
                        ("source-unknown", 'source = "nowhere"'),
                        ("source-later", 'source = "later"\n' + drop + 'label = "later"')]:
        (ws / f"{name}.toml").write_text(quick + drop + entry + "\n")
    (ws / "source-itself.toml").write_text(quick + drop + drop + 'label = "self"\nsource = "self"\n')
    (ws / "missing-model.toml").write_text(QUICK_PROFILE.format(spec=ws / "no-such-model"))
    # weights that a load would refuse: the refusal comes before any model loads
    (ws / "huge.toml").write_text(QUICK_PROFILE.format(spec=ws / "truncated-data").replace(
        "lm_eval_wikitext = false", "lm_eval_max_length = 1048576"))
    (ws / "huge-accuracy.toml").write_text(QUICK_PROFILE.format(spec=ws / "truncated-data").replace(
        '["perplexity"]', '["accuracy"]') + "[accuracy]\nmax_length = 1048576\n[accuracy.tasks]\npiqa = { limit = 1 }\n")
    (ws / "tensor-parallel-3.toml").write_text(quick.replace('["perplexity"]', '["throughput_vllm"]')
                                               + "[vllm]\ntensor_parallel_size = 3\n")
    (ws / "huge-generation.toml").write_text(QUICK_PROFILE.format(spec=ws / "truncated-data").replace(
        '["perplexity"]', '["throughput_hf"]') + "[throughput]\nbatch_size = 1\ninput_len = 1048576\noutput_len = 8\n")
    claims = resources.files("suites").joinpath("claims", "laco.toml").read_text(encoding="utf-8")
    assert "\nstatement =" in claims
    (ws / "claims-typo.toml").write_text(claims.replace("\nstatement =", "\nstatment =", 1))
    tolerances = resources.files("suites").joinpath("tolerances.toml").read_text(encoding="utf-8")
    assert "peak_ratio =" in tolerances
    (ws / "tolerances-typo.toml").write_text(tolerances.replace("peak_ratio =", "peak_ration ="))
    (ws / "tolerance-range.toml").write_text("[perplexity]\nratio = 0.5\n")
    return ws


def state(folder: Path) -> dict[str, tuple]:
    """Every path under `folder` with its kind, size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            out[str(path.relative_to(folder))] = (path.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def run(row: Bad, argv: list[str], env: dict[str, str], cwd: Path, monkeypatch, capfd) -> tuple[int, str]:
    if row.process:
        full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run([sys.executable, "-m", "laco", *argv], cwd=cwd, env=full, capture_output=True, text=True,
                              timeout=600)
        return proc.returncode, proc.stderr
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    capfd.readouterr()
    code = main(argv)
    return code, capfd.readouterr().err


@pytest.mark.parametrize("row", PARAMS)
def test_bad_input_is_one_line_exit_2_and_nothing_written(row: Bad, ws, tmp_path, monkeypatch, capfd):
    tmp = tmp_path / "work"
    tmp.mkdir()
    if row.prepare:
        row.prepare(tmp, monkeypatch)
    argv = [a.format(ws=ws, tmp=tmp) for a in row.argv]
    env = {k: v.format(ws=ws, tmp=tmp) for k, v in row.env.items()}
    before = state(ws), state(tmp)
    try:
        code, err = run(row, argv, env, tmp, monkeypatch, capfd)
        after = state(ws), state(tmp)  # with the row's permissions still in place, as `before`
    finally:
        for path in (tmp / "data", tmp / "ro"):
            if path.exists():
                path.chmod(0o755)
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err[-3000:]}"
    command = argv[0] if argv[0] in ("prune", "post-train", "bench", "gate", "compare", "report") else None
    assert lines[0].startswith(f"laco {command}: error: " if command else "laco: error: "), lines[0]
    assert re.search(row.message, lines[0]), f"{lines[0]!r} does not name what is wrong ({row.message!r})"
    assert code == 2, f"exit code {code}: {lines[0]}"
    assert after == before, f"something was written: {lines[0]}"
    print(f"{row.id} | laco {' '.join(argv)} | {code} | {lines[0]}")


def test_a_dead_writers_lock_is_taken_over_in_one_line_and_its_results_kept(ws, tmp_path, monkeypatch, capfd):
    """Not a refusal: the lock of a writer that is gone (kill -9 leaves lock.json and .lock behind) is
    taken over, said in one line, and the run resumes without measuring again what it has."""
    import json

    monkeypatch.chdir(tmp_path)
    argv = bench(f"{ws}/quick.toml", "--data-dir", str(DATA_DIR))
    if not (DATA_DIR / "MANIFEST.md").is_file():
        pytest.skip(f"evaluation data not found at {DATA_DIR} (set LACO_DATA_DIR)")
    assert main(argv) == 0
    result = tmp_path / "run" / "results" / "dense" / "perplexity.json"
    kept = result.read_bytes()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run" / ".lock").touch()
    (tmp_path / "run" / "lock.json").write_text(json.dumps({"pid": int(gone.stdout), "host": os.uname().nodename,
                                                            "started": "2026-01-01T00:00:00+00:00", "command": "laco bench"}))
    capfd.readouterr()
    assert main(argv) == 0
    lines = [line for line in capfd.readouterr().err.splitlines() if "lock" in line]
    assert lines == [f"laco bench: taking over the lock of run from pid {int(gone.stdout)} on host {os.uname().nodename} "
                     "since 2026-01-01T00:00:00+00:00 (laco bench): that process is gone"]
    assert result.read_bytes() == kept and not (tmp_path / "run" / "lock.json").exists()
    print(f"stale-lock | laco {' '.join(argv)} | 0 | {lines[0]}")
