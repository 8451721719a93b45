"""`laco post-train` on tiny models: training moves the loss, a zero learning rate moves nothing, the
distillation pairs the layers its record names, the training text stays apart from evaluation, the
output reloads like its input, and the record says what was done."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from laco import LacoError
from laco.cli import main
from laco.distill import layer_outputs, layer_pairing, pair_loss, sources_after_deletion, teacher_layers
from laco.posttrain import post_train, run_post_training
from laco.pruners import load_pruned
from laco.recipes import recipe_settings
from laco.saving import read_provenance, save_pruned
from laco.surgery import decoder_layers
from laco.training_text import TrainingText, file_training, token_blocks, wikitext_training

SEQ = 32
ONE_STEP = {"seq_len": SEQ, "batch_size": 4, "micro_batch_size": 2, "tokens": 4 * SEQ}
TEXT = ("The river rises in the hills above the town and runs south through farmland to the sea. "
        "Its valley was settled early, and the old mill still stands beside the ford. ")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """Tiny Llama outputs of `laco prune`: the dense folder, a laco merge, a shortgpt deletion and a
    width-pruned llm-pruner model (layers of different widths: its own loader)."""
    from conftest import tiny_loaded

    root = tmp_path_factory.mktemp("pruned")
    loaded = tiny_loaded("llama")
    loaded.model.save_pretrained(root / "dense")
    loaded.tokenizer.save_pretrained(root / "dense")
    runs = {"laco": ["-C", "3", "-T", "0.3"], "shortgpt": ["--method", "shortgpt", "--target-layers", "5"],
            "llm-pruner": ["--method", "llm-pruner", "--target-ratio", "0.2"]}
    for name, args in runs.items():
        assert main(["prune", str(root / "dense"), "--out", str(root / name), "--quiet", *args]) == 0
    return root


def training_file(folder: Path, repeats: int = 2) -> Path:
    path = folder / "train.txt"
    path.write_text(TEXT * repeats)
    return path


def independent_blocks(tokenizer, text: str, n: int) -> torch.Tensor:
    """The training blocks as the tokenizer alone gives them: the text's bytes, then end-of-sequence."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids[: n * SEQ]).view(n, SEQ)


def lm_loss(model, blocks: torch.Tensor) -> float:
    with torch.no_grad():
        return model(input_ids=blocks, labels=blocks).loss.item()


def post_train_cli(model: Path, out: Path, recipe: str, params: dict, *more: str) -> int:
    args = [arg for key, value in params.items() for arg in ("--param", f"{key}={value}")]
    return main(["post-train", str(model), "--out", str(out), "--recipe", recipe, "--quiet", *args, *more])


def test_one_training_step_lowers_the_loss_on_the_training_text(pruned, tmp_path):
    text = tmp_path / "four-blocks.txt"
    text.write_text(TEXT[:140].strip())  # 4 x 32 tokens and a few left over: one step of 4 reads all of them
    out = tmp_path / "trained"
    assert post_train_cli(pruned / "laco", out, "continue", {**ONE_STEP, "lr": 1e-3}, "--train-file", str(text)) == 0
    before, tokenizer, _ = load_pruned(pruned / "laco")
    after, _, record = load_pruned(out)
    blocks = independent_blocks(tokenizer, text.read_text().strip(), 4)  # one step of 4 sequences: all of them
    first = record["post_training"]["loss_curve"][0]["loss"]
    assert first == pytest.approx(lm_loss(before, blocks), abs=1e-4)  # the step's loss is the input model's
    assert lm_loss(after, blocks) < lm_loss(before, blocks) - 1e-3


def zero_lr_run(pruned: Path, tmp_path: Path, recipe: str, *, random_init: bool = False) -> Path:
    """A run through the core with lr 0 (the CLI refuses it): the training loop and the save alone."""
    model, tokenizer, record = load_pruned(pruned)
    settings = recipe_settings(recipe, ONE_STEP).model_copy(update={"lr": 0.0})
    texts = [TEXT * 2]
    text = TrainingText(texts, {"file": "test", "sha256": hashlib.sha256(texts[0].encode()).hexdigest()})
    blocks = token_blocks(tokenizer, texts, SEQ)
    trained, out_record = post_train(model, record, recipe, settings, text, blocks, random_init=random_init, progress=False)
    return save_pruned(trained, tokenizer, tmp_path / f"{recipe}-zero", out_record)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.mark.parametrize("recipe", ["continue", "lora", "distill"])
def test_a_zero_learning_rate_leaves_the_weights_byte_identical(pruned, tmp_path, recipe):
    out = zero_lr_run(pruned / "laco", tmp_path, recipe)
    before, after = weights(pruned / "laco"), weights(out)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k]) or before[k].dtype != after[k].dtype]
    assert changed == []
    assert read_provenance(out)["post_training"]["steps"] == 1


def test_random_init_draws_every_weight_matrix_afresh_at_the_same_shapes(pruned, tmp_path):
    out = zero_lr_run(pruned / "laco", tmp_path, "continue", random_init=True)
    before, after = weights(pruned / "laco"), weights(out)
    matrices = [k for k in before if before[k].dim() == 2]
    assert all(before[k].shape == after[k].shape for k in before)
    assert all(not torch.equal(before[k], after[k]) for k in matrices)
    # transformers' initialiser for Llama: normal with initializer_range 0.02 (the fixture scales to 0.08)
    assert all(0.015 < after[k].float().std().item() < 0.025 for k in matrices)
    assert read_provenance(out)["post_training"]["random_init"] is True


def test_deleted_layers_go_to_the_kept_layer_below_them():
    assert sources_after_deletion([3, 4], 7) == [[0], [1], [2, 3, 4], [5], [6]]
    assert sources_after_deletion([0, 3, 6], 7) == [[0, 1], [2, 3], [4], [5, 6]]
    assert teacher_layers([[0, 1], [2, 3], [4], [5, 6]]) == [1, 3, 4, 6]


@pytest.mark.parametrize("method", ["laco", "shortgpt"])
def test_distill_pairs_each_pruned_layer_with_the_original_layers_its_record_names(pruned, method):
    student, tokenizer, record = load_pruned(pruned / method)
    teacher = AutoModelForCausalLM.from_pretrained(pruned / "dense").eval()
    pairing = layer_pairing(record)
    if method == "laco":
        assert pairing == record["layer_sources"]
    else:  # each kept layer, and the deleted ones above it up to the next kept layer
        kept = [i for i in range(8) if i not in record["removed_layers"]]
        ends = [k - 1 for k in kept[1:]] + [7]
        assert pairing == [list(range(0 if j == 0 else k, end + 1)) for j, (k, end) in enumerate(zip(kept, ends))]
        for j, k in enumerate(kept):  # layer j of the pruned model is the dense model's layer kept[j]
            assert torch.equal(decoder_layers(student)[j].mlp.up_proj.weight, decoder_layers(teacher)[k].mlp.up_proj.weight)
    ids = independent_blocks(tokenizer, TEXT, 2)
    mine, _ = layer_outputs(student, ids, set(range(len(pairing))))
    dense, _ = layer_outputs(teacher, ids, set(range(8)))
    for j, sources in enumerate(pairing):
        error = pair_loss(mine[j], dense[teacher_layers(pairing)[j]], normalise=True).item()
        untouched = all(s == [i] for i, s in enumerate(pairing[: j + 1]))  # no layer up to j merged or deleted
        assert (error < 1e-10) == untouched, (j, sources, error)


@pytest.mark.parametrize("method,args", [("drop", ["-C", "3", "-T", "0.3"]), ("rule-merge", ["--target-layers", "6"]),
                                         ("come", ["--target-layers", "6"])])
def test_every_depth_pruner_records_the_layers_behind_each_output_layer(pruned, tmp_path, method, args):
    out = tmp_path / method
    assert main(["prune", str(pruned / "dense"), "--out", str(out), "--method", method, "--quiet", *args]) == 0
    record = read_provenance(out)
    pairing = layer_pairing(record)
    assert len(pairing) == record["n_layers_after"] < 8
    assert [i for sources in pairing for i in sources] == list(range(8))  # every original layer once, in order


def test_distill_records_its_pairing_and_teacher(pruned, tmp_path):
    out = tmp_path / "distilled"
    assert post_train_cli(pruned / "shortgpt", out, "distill", ONE_STEP, "--train-file", str(training_file(tmp_path))) == 0
    record = read_provenance(out)
    distill = record["post_training"]["distill"]
    assert distill["layer_sources"] == layer_pairing(read_provenance(pruned / "shortgpt"))
    assert distill["teacher"]["path"] == str((pruned / "dense").resolve())


def test_distill_refuses_records_without_layer_correspondence(pruned, tmp_path):
    with pytest.raises(LacoError, match="distill needs a `laco prune` output"):
        run_post_training(str(pruned / "dense"), tmp_path / "out", "distill", ONE_STEP, train_file=str(training_file(tmp_path)))
    with pytest.raises(LacoError, match="a slicegpt record names none"):
        layer_pairing({"method": "slicegpt"})
    assert not (tmp_path / "out").exists()


def test_training_documents_that_are_evaluated_are_refused(pruned, data_dir, tmp_path):
    with pytest.raises(LacoError, match=r"training documents 5\.\.6 are evaluated \(--exclude-docs 5\.\.6\)"):
        wikitext_training([3, 4, 5, 6], [5, 6], data_dir)
    doc = wikitext_training([7], [], data_dir).texts[0]
    paragraph = next(p.strip() for p in doc.splitlines() if len(p.strip()) > 80)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT + "\n" + paragraph + "\n" + TEXT)
    with pytest.raises(LacoError, match="holds text of evaluated wikitext-2 document 7"):
        file_training(corpus, None, [6, 7], data_dir)
    assert file_training(corpus, None, [6, 8], data_dir).texts  # other documents: accepted
    with pytest.raises(LacoError, match="are evaluated"):
        run_post_training(str(pruned / "laco"), tmp_path / "out", "continue", {}, train_docs="3:6", exclude_docs=[5],
                          data=data_dir)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["laco", "llm-pruner"])
def test_a_lora_output_reloads_through_the_loader_of_its_input(pruned, tmp_path, method):
    out = tmp_path / "lora"
    text = str(training_file(tmp_path))
    params = {**ONE_STEP, "lr": 1e-2, "warmup_ratio": 0}  # with warm-up, the first step has lr 0
    assert post_train_cli(pruned / method, out, "lora", params, "--train-file", text) == 0
    before, after = read_provenance(pruned / method), read_provenance(out)
    assert after["loader"] == before["loader"]
    if method == "llm-pruner":
        assert before["loader"] == "laco.baselines.llm_pruner:load"  # widths differ between layers
    model, _, _ = load_pruned(out)
    old, new = weights(pruned / method), weights(out)
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in old.items()}
    assert not any("lora" in k for k in new)  # merged, not saved as adapters
    moved = {k for k in old if not torch.equal(old[k], new[k])}
    assert moved and all(k.endswith("proj.weight") for k in moved)  # adapters touch the projections alone
    assert decoder_layers(model)[1].mlp.down_proj.weight.shape == old["model.layers.1.mlp.down_proj.weight"].shape


def test_the_record_keeps_the_pruning_and_adds_the_training(pruned, tmp_path, data_dir):
    out = tmp_path / "trained"
    params = {**ONE_STEP, "tokens": 4 * 4 * SEQ, "log_every": 2}
    assert post_train_cli(pruned / "laco", out, "continue", params, "--train-docs", "20:22", "--seed", "3") == 0
    before, record = read_provenance(pruned / "laco"), read_provenance(out)
    assert record["layer_sources"] == before["layer_sources"] and record["method"] == "laco"
    post = record["post_training"]
    assert post["recipe"] == "continue" and post["hyperparameters"]["lr"] == 2e-4
    assert post["hyperparameters"]["beta2"] == 0.95 and post["hyperparameters"]["schedule"] == "cosine"
    documents = wikitext_training([20, 21], [], data_dir).texts
    assert post["text"]["documents"] == [20, 21]
    assert post["text"]["sha256"] == hashlib.sha256("\n".join(documents).encode()).hexdigest()
    assert post["tokens_seen"] == 4 * 4 * SEQ and post["steps"] == 4 and post["seed"] == 3
    assert [(p["step"], p["tokens"]) for p in post["loss_curve"]] == [(2, 2 * 4 * SEQ), (4, 4 * 4 * SEQ)]
    assert all(p["loss"] > 0 for p in post["loss_curve"]) and post["seconds"] > 0 and post["cpu_seconds"] > 0
    assert post["input_fingerprint"] == before["fingerprint"] != record["fingerprint"]


@pytest.mark.parametrize("recipe,params,message", [
    ("contine", {}, r"unknown post-training recipe 'contine'; did you mean 'continue'\?"),
    ("continue", {"rank": 8}, r"recipe continue does not take rank"),
    ("lora", {"rnak": 8}, r"recipe lora does not take rnak; did you mean 'rank'\?"),
    ("continue", {"lr": 0}, r"recipe continue: lr: Input should be greater than 0"),
    ("distill", {"lr": -1e-4}, r"recipe distill: lr: Input should be greater than 0"),
    ("continue", {"batch_size": 4, "micro_batch_size": 3}, r"batch_size 4 must be a multiple of micro_batch_size 3"),
    ("continue", {"tokens": 100}, r"tokens 100 is less than one step of batch_size x seq_len = 2048"),
    ("distill", {"hidden_weight": 0}, r"hidden_weight and lm_weight are both 0"),
])
def test_recipe_settings_refuse_bad_values(recipe, params, message):
    with pytest.raises(LacoError, match=message):
        recipe_settings(recipe, params)
