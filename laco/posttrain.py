"""`laco post-train`: train a pruned model further, as LaCo, LLM-Pruner and CoMe each do after pruning.

    laco post-train PRUNED --out DIR --recipe continue|lora|distill [--param KEY=VALUE ...]

The input is any output of `laco prune` (a folder with laco.json) or a model spec; `--random-init`
trains a randomly initialised model of the same shape instead (the control of LaCo's "inherits the
parameters" claim, Fig. 3). The recipes and their hyper-parameters are `laco.recipes`, the training
text `laco.training_text`, the distillation `laco.distill`. Training runs in transformers' Trainer
(LoRA through peft, merged into the weights at the end), so the output has the input's shapes and
reloads through the input's loader (`laco.pruners.load_pruned`). Its laco.json keeps the pruning
record and gains `post_training`: the recipe, its hyper-parameters, the training text's source and
SHA-256, the tokens seen, the loss curve (step, loss, tokens), the wall time and the seed; the
fingerprint changes with them.

Everything the user can get wrong (the recipe, its parameters, the training text, the output) is
checked before the model is loaded; nothing is written unless training finishes.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

import laco
from laco import LacoError
from laco.cli import ArgumentParser, parse_params
from laco.recipes import RECIPES, SCALED, SOURCES, Recipe, recipe_settings
from laco.record import with_post_training
from laco.training_text import (
    TrainingText,
    calibration_documents,
    file_training,
    parse_documents,
    token_blocks,
    unread_training,
    wikitext_training,
)

LOSS_MEASURED = {
    "continue": "language-model cross-entropy, nats per token, mean over the step's tokens",
    "lora": "language-model cross-entropy, nats per token, mean over the step's tokens",
    "distill": "distillation loss (laco.distill): hidden_weight x mean layer-pair MSE + lm_weight x LM loss",
}
DEFAULT_PERPLEXITY = "512:32:1"  # the smollm2-135m profile: 32 windows of 512 tokens, lm-eval's first document


def post_train_parser() -> ArgumentParser:
    p = ArgumentParser(prog="laco post-train", description="Train a pruned model further (continue, lora, distill) "
                       "and save it like a pruned output, its record extended with the training.")
    p.add_argument("model", help="a `laco prune` output folder, or a model spec (hub id, folder, .gguf, smollm2-135m)")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--recipe", required=True, help=f"one of {', '.join(RECIPES)}")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyper-parameter of the recipe (repeatable), e.g. lr=1e-4, tokens=204800, seq_len=256")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--train-docs", metavar="A:B", help="train on these wikitext-2 test documents (A:B, N, or a list)")
    text.add_argument("--train-file", help="train on this corpus: a text file, or JSONL with --train-field")
    p.add_argument("--train-field", help="the JSONL field that holds the text")
    p.add_argument("--exclude-docs", metavar="A:B", default="",
                   help="wikitext-2 test documents the run evaluates (A:B, N, or a list): refused in --train-docs and "
                        "--train-file, left out of the default text")
    p.add_argument("--perplexity", metavar="WINDOW:N[:DOCS]", default=DEFAULT_PERPLEXITY,
                   help="default training text: the documents a perplexity of N windows of WINDOW tokens and lm-eval's "
                        f"first DOCS wikitext documents never read (default {DEFAULT_PERPLEXITY}), minus calibration's")
    p.add_argument("--random-init", action="store_true", help="train a randomly initialised model of the same shape")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (weights stay in --dtype)")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def post_train_main(argv: list[str]) -> int:
    args = post_train_parser().parse_args(argv)
    params = parse_params(args.param)
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    out, record = run_post_training(
        args.model, args.out, args.recipe, params, train_docs=args.train_docs, train_file=args.train_file,
        train_field=args.train_field, exclude_docs=parse_documents(args.exclude_docs) if args.exclude_docs else [],
        perplexity=parse_perplexity(args.perplexity), random_init=args.random_init, seed=args.seed, bf16=args.bf16,
        dtype=args.dtype, device=args.device, progress=not args.quiet, force=args.force)
    print(describe(record["post_training"]) + f" -> {out}")
    return 0


def parse_perplexity(spec: str) -> tuple[int, int, int]:
    parts = spec.split(":")
    try:
        window, n_windows, *docs = (int(x) for x in parts)
    except ValueError:
        raise LacoError(f"--perplexity takes WINDOW:N or WINDOW:N:DOCS, got {spec!r}") from None
    if len(docs) > 1 or window < 1 or n_windows < 0:
        raise LacoError(f"--perplexity takes WINDOW:N or WINDOW:N:DOCS, got {spec!r}")
    return window, n_windows, docs[0] if docs else 0


def describe(post: dict) -> str:
    curve = post["loss_curve"]
    loss = f"loss {curve[0]['loss']:.4f} -> {curve[-1]['loss']:.4f}" if curve else "no loss logged"
    start = "random-init " if post["random_init"] else ""
    return (f"{start}{post['recipe']}: {post['tokens_seen']} tokens in {post['steps']} steps, {loss}, "
            f"{post['seconds']:.1f}s wall, {post['cpu_seconds']:.1f}s CPU")


# ---- the step, as the CLI and the bench call it --------------------------------------------------

def run_post_training(model: str, out: str | Path, recipe: str, params: dict, *, train_docs: str | None = None,
                      train_file: str | None = None, train_field: str | None = None, exclude_docs: list[int] = (),
                      perplexity: tuple[int, int, int] = (512, 32, 1), random_init: bool = False, seed: int = 0,
                      bf16: bool = False, dtype: str = "float32", device: str = "cpu", progress: bool = True,
                      force: bool = False, data=None) -> tuple[Path, dict]:
    """Check everything, load, train, save: (output folder, its record)."""
    from laco.saving import check_output, save_pruned

    settings = recipe_settings(recipe, params)
    check_output(out, force)
    record = input_record(model)
    if recipe == "distill":  # refused before anything is loaded
        from laco.distill import layer_pairing

        if record is None:
            raise LacoError("distill needs a `laco prune` output: its record names the dense teacher and the original "
                            "layers each pruned layer stands for")
        layer_pairing(record)
    tokenizer = input_tokenizer(model, record)
    text = choose_text(tokenizer, record or {}, train_docs=train_docs, train_file=train_file, train_field=train_field,
                       exclude_docs=list(exclude_docs), perplexity=perplexity, data=data)
    blocks = token_blocks(tokenizer, text.texts, settings.seq_len)
    net, tokenizer, record = load_input(model, record, dtype=dtype, device=device, seed=seed)
    trained, record = post_train(net, record, recipe, settings, text, blocks, random_init=random_init, seed=seed,
                                 bf16=bf16, dtype=dtype, device=device, progress=progress)
    return save_pruned(trained, tokenizer, out, record, force=force), record


def input_record(model: str) -> dict | None:
    """The pruning record of a `laco prune` output; None for a model spec (checked to exist)."""
    from laco.loading import resolve
    from laco.saving import PROVENANCE_FILE, read_provenance

    if (Path(model) / PROVENANCE_FILE).is_file():
        return read_provenance(model)
    resolve(model)
    return None


def input_tokenizer(model: str, record: dict | None):
    """The tokenizer alone: the training text is checked before any weight is read."""
    from transformers import AutoTokenizer

    from laco.loading import load_tokenizer

    tokenizer = load_tokenizer(model) if record is None else AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def choose_text(tokenizer, record: dict, *, train_docs, train_file, train_field, exclude_docs, perplexity,
                data=None) -> TrainingText:
    if train_field and not train_file:
        raise LacoError("--train-field needs a JSONL --train-file")
    if train_file:
        return file_training(train_file, train_field, exclude_docs, data)
    if train_docs:
        return wikitext_training(parse_documents(train_docs), exclude_docs, data)
    window, n_windows, lm_eval_documents = perplexity
    return unread_training(tokenizer, window, n_windows, lm_eval_documents, calibrated=calibration_documents(record),
                           excluded=exclude_docs, data=data)


def load_input(model: str, record: dict | None, *, dtype: str, device: str, seed: int):
    """(model, tokenizer, record): a pruned output through its own loader; a model spec with a record
    of the dense model (method "dense", nothing removed)."""
    from laco.loading import load_model
    from laco.pruners import load_pruned
    from laco.record import build_record
    from laco.surgery import parameter_count

    if record is not None:
        net, tokenizer, record = load_pruned(model, dtype=dtype, device=device)
        return net, tokenizer, record
    loaded = load_model(model, dtype=dtype, device=device)
    dense = build_record(loaded, "dense", [], calibration="none: the dense model is not pruned", config={}, target=None,
                         params_before=parameter_count(loaded.model), seed=seed, prune_seconds=0.0)
    return loaded.model, loaded.tokenizer, dense


# ---- training ------------------------------------------------------------------------------------

class Blocks(torch.utils.data.Dataset):
    """Fixed-length token blocks, each its own labels (the model shifts them)."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def post_train(model: nn.Module, record: dict, recipe: str, settings: Recipe, text: TrainingText, blocks: torch.Tensor,
               *, random_init: bool = False, seed: int = 0, bf16: bool = False, dtype: str = "float32",
               device: str = "cpu", progress: bool = True) -> tuple[nn.Module, dict]:
    """Train `model` by the recipe on `blocks`: (the trained model, its record)."""
    from transformers import set_seed

    set_seed(seed)
    if random_init:
        reinitialise(model, seed)
    teacher, pairing, extra = None, None, {}
    if recipe == "distill":
        teacher, pairing, extra = distill_setup(model, record, dtype=dtype, device=device)
    if recipe == "lora":
        model, extra = with_lora(model, settings)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    curve, times = train(model, blocks, settings, seed=seed, bf16=bf16, device=device, progress=progress,
                         teacher=teacher, pairing=pairing)
    if recipe == "lora":
        model = model.merge_and_unload()
    model.eval()
    post = training_record(record, recipe, settings, text, blocks, curve, times=times, seed=seed,
                           random_init=random_init, precision=f"bfloat16 autocast, {dtype} weights" if bf16 else dtype,
                           device=device, trainable=trainable, extra=extra)
    return model, with_post_training(record, post)


def reinitialise(model: nn.Module, seed: int) -> None:
    """Every weight drawn afresh by the model's own initialisation, at its current shapes."""
    torch.manual_seed(seed)
    for p in model.parameters():
        p._is_hf_initialized = False  # transformers' initialisers skip tensors flagged as loaded
    model.apply(model._init_weights)
    model.tie_weights()


def with_lora(model: nn.Module, settings) -> tuple[nn.Module, dict]:
    """The model with LoRA adapters on every attention and MLP projection of every layer."""
    from peft import LoraConfig, get_peft_model

    from laco.architectures import architecture_of

    arch = architecture_of(model)
    targets = [f"{arch.layers_path}.{i}.{name}" for i in range(model.config.num_hidden_layers) for name in arch.merged]
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft asks transformers a question it has renamed: not the user's concern
        warnings.filterwarnings("ignore", category=FutureWarning)
        wrapped = get_peft_model(model, config)
    return wrapped, {"lora": {"modules": list(arch.merged), "layers": model.config.num_hidden_layers,
                                                    "merged": True}}


def distill_setup(model: nn.Module, record: dict, *, dtype: str, device: str) -> tuple[nn.Module, list, dict]:
    """(the dense teacher, the layer pairing, what the record says of both)."""
    from laco.distill import check_pairing, layer_pairing, load_teacher, teacher_layers

    pairing = layer_pairing(record)
    teacher = load_teacher(record, dtype=dtype, device=device)
    check_pairing(pairing, model, teacher)
    return teacher, pairing, {"distill": {"teacher": record["source"], "layer_sources": pairing,
                                          "teacher_layers": teacher_layers(pairing)}}


def training_arguments(settings: Recipe, scratch: str, *, seed: int, bf16: bool, device: str):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=scratch, max_steps=settings.steps, per_device_train_batch_size=settings.micro_batch_size,
        gradient_accumulation_steps=settings.batch_size // settings.micro_batch_size, learning_rate=settings.lr,
        adam_beta1=settings.beta1, adam_beta2=settings.beta2, weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm, optim="adamw_torch", warmup_steps=settings.warmup_ratio,
        lr_scheduler_type="constant_with_warmup" if settings.schedule == "constant" else settings.schedule,
        logging_strategy="steps", logging_steps=settings.log_every, save_strategy="no", report_to="none",
        seed=seed, data_seed=seed, bf16=bf16, use_cpu=device == "cpu", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False,
    )


def train(model: nn.Module, blocks: torch.Tensor, settings: Recipe, *, seed: int, bf16: bool, device: str,
          progress: bool, teacher: nn.Module | None = None, pairing=None) -> tuple[list[dict], dict[str, float]]:
    """Run transformers' Trainer: (the loss curve, {seconds: wall time, cpu_seconds: the process's CPU
    time, all threads}). On a shared machine the CPU time is the steadier figure."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from laco.distill import DistillTrainer

    curve = LossCurve(settings, progress)
    with tempfile.TemporaryDirectory(prefix="laco-post-train-") as scratch:  # Trainer's own folder; nothing is saved there
        kwargs = dict(model=model, args=training_arguments(settings, scratch, seed=seed, bf16=bf16, device=device),
                      train_dataset=Blocks(blocks), callbacks=[curve])
        trainer = DistillTrainer(**kwargs, teacher=teacher, pairing=pairing, settings=settings) if teacher is not None \
            else Trainer(**kwargs)
        for quiet in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(quiet)
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train()
        times = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}
    return curve.points, times


class LossCurve(TrainerCallback):
    """One point per logged step: the step, the mean loss since the last point, the tokens seen."""

    def __init__(self, settings: Recipe, progress: bool):
        self.settings, self.progress, self.points = settings, progress, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            point = {"step": state.global_step, "loss": float(logs["loss"]),
                     "tokens": state.global_step * self.settings.tokens_per_step}
            self.points.append(point)
            if self.progress:
                print(f"step {point['step']}/{self.settings.steps}: loss {point['loss']:.4f}, {point['tokens']} tokens",
                      file=sys.stderr, flush=True)


# ---- the record ----------------------------------------------------------------------------------

def training_record(record: dict, recipe: str, settings: Recipe, text: TrainingText, blocks: torch.Tensor,
                    curve: list[dict], *, times: dict[str, float], seed: int, random_init: bool, precision: str, device: str,
                    trainable: int, extra: dict) -> dict:
    """The `post_training` entry of the output's record."""
    from laco.provenance import device_info, git_commit, library_versions

    tokens_seen = settings.steps * settings.tokens_per_step
    return {
        "recipe": recipe, "recipe_source": SOURCES[recipe], "hyperparameters": settings.model_dump(), "scaled": SCALED,
        "text": {**text.record, "tokens_available": blocks.numel(), "blocks": len(blocks)},
        "steps": settings.steps, "tokens_per_step": settings.tokens_per_step, "tokens_seen": tokens_seen,
        "epochs": tokens_seen / blocks.numel(), "loss_measured": LOSS_MEASURED[recipe], "loss_curve": curve,
        **times, "seed": seed, "random_init": random_init,
        "precision": precision, "trainable_parameters": trainable,
        "input_fingerprint": record["fingerprint"], "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "laco_bench_version": laco.__version__, "libraries": {**library_versions(), **peft_version()},
        "device": device_info(device), "git_commit": git_commit(), **extra,
    }


def peft_version() -> dict[str, str]:
    from importlib import metadata

    try:
        return {"peft": metadata.version("peft")}
    except metadata.PackageNotFoundError:
        return {}
