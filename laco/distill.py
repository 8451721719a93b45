"""Distillation by layer correspondence, after CoMe's hierarchical distillation.

CoMe ("Layer as Puzzle Pieces", NeurIPS 2025) follows its merging with "a hierarchical distillation
protocol that leverages the correspondences between the original and pruned model layers established
during pruning". What this module implements:

- the correspondence is the pruning record's: output layer j stands for the original layers
  `layer_sources[j]` (LaCo, drop, rule-merge, CoMe write it). A ShortGPT record names the deleted
  layers instead; each kept layer then stands for itself and the deleted layers up to the next kept
  one (deleted layers below the first kept one go to it), since its output feeds the layer that
  followed them. An LLM-Pruner record keeps every layer (narrower): layer j stands for layer j.
  SliceGPT rotates the hidden states, so they cannot be compared with the dense model's: refused;
- the teacher is the dense model the record names as `source` (its fingerprint is checked);
- the loss, on the training text: for every pruned layer j, the MSE between its output hidden state
  and the dense model's after the last original layer of `layer_sources[j]` (divided by the
  teacher's mean square there when `normalise`, so that deep layers with large hidden states do not
  drown the shallow ones), averaged over the layers and weighted by `hidden_weight`, plus
  `lm_weight` x the language-model loss;
- the student runs end to end on its own hidden states, and all layers learn at once in one stage.

How it differs from CoMe's paper, as far as this project knows it: the paper's exact losses, their
weights, its stages and its optimiser settings are not reproduced (this project has not checked them
against CoMe's code); the layer-pair MSE above is this project's reading of "leverages the
correspondences". Its results are this implementation's, not CoMe's.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Trainer

from laco import LacoError
from laco.surgery import decoder, decoder_layers

SAME_LAYERS = ("llm-pruner",)  # width methods that keep every layer and the residual basis


def layer_pairing(record: dict) -> list[list[int]]:
    """For every layer of the pruned model, the original layers it stands for."""
    method = record.get("method")
    if record.get("layer_sources"):
        return [list(s) for s in record["layer_sources"]]
    if "removed_layers" in record:
        return sources_after_deletion(record["removed_layers"], record["n_layers_before"])
    if method in SAME_LAYERS:
        return [[i] for i in range(len(record["layer_widths"]))]
    raise LacoError(f"distill pairs each pruned layer with the original layers it stands for; a {method} record "
                    "names none (depth methods and llm-pruner do)")


def sources_after_deletion(removed: list[int], n_layers: int) -> list[list[int]]:
    """Kept layer k stands for k and the deleted layers above it up to the next kept layer; deleted
    layers below the first kept one go to that one."""
    deleted, sources, below_first = set(removed), [], []
    for i in range(n_layers):
        if i not in deleted:
            sources.append(below_first + [i])
            below_first = []
        elif sources:
            sources[-1].append(i)
        else:
            below_first.append(i)
    if not sources:
        raise LacoError("the record deletes every layer")
    return sources


def teacher_layers(pairing: list[list[int]]) -> list[int]:
    """The dense layer whose output pruned layer j learns: the last one it stands for."""
    return [max(sources) for sources in pairing]


def load_teacher(record: dict, *, dtype: str, device: str):
    """The dense model the record was pruned from; refused when its weights are not the ones pruned."""
    from laco.loading import load_model, resolve

    source = record.get("source") or {}
    spec = source.get("path") if source.get("kind") in ("folder", "gguf") else source.get("spec")
    if not spec:
        raise LacoError("distill needs the dense model the record names as source; this record names none")
    found = resolve(spec, source.get("revision"))
    if found.fingerprint() != record.get("source_fingerprint"):
        raise LacoError(f"the dense source {spec} is not the model this one was pruned from (its weights differ)")
    teacher = load_model(spec, dtype=dtype, device=device, revision=source.get("revision")).model
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def check_pairing(pairing: list[list[int]], student: nn.Module, teacher: nn.Module) -> None:
    n_student, n_teacher = len(decoder_layers(student)), len(decoder_layers(teacher))
    if len(pairing) != n_student:
        raise LacoError(f"the record pairs {len(pairing)} layers, the model has {n_student}")
    if max(teacher_layers(pairing)) >= n_teacher:
        raise LacoError(f"the record names dense layer {max(teacher_layers(pairing))}, the dense model has {n_teacher}")


def layer_outputs(model: nn.Module, input_ids: torch.Tensor, wanted: set[int],
                  labels: torch.Tensor | None = None) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """The output hidden states of the wanted decoder layers, and the LM loss when `labels` are given
    (otherwise only the decoder runs: no logits are computed)."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(module, args, output):
            outputs[index] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(decoder_layers(model)) if i in wanted]
    try:
        if labels is not None:
            return outputs, model(input_ids=input_ids, labels=labels, use_cache=False).loss
        decoder(model)(input_ids=input_ids, use_cache=False)
        return outputs, None
    finally:
        for h in handles:
            h.remove()


def pair_loss(student: torch.Tensor, teacher: torch.Tensor, normalise: bool) -> torch.Tensor:
    error = (student.float() - teacher.float()).pow(2).mean()
    return error / teacher.float().pow(2).mean().clamp_min(1e-12) if normalise else error


class DistillTrainer(Trainer):
    """transformers' Trainer whose loss is the layer-pair distillation loss (plus the LM loss if asked)."""

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it over gradient accumulation

    def __init__(self, *args, teacher: nn.Module, pairing: list[list[int]], settings, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher, self.targets, self.settings = teacher, teacher_layers(pairing), settings

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        s, ids = self.settings, inputs["input_ids"]
        wanted = {}
        if s.hidden_weight:
            with torch.no_grad():
                wanted, _ = layer_outputs(self.teacher.to(ids.device), ids, set(self.targets))
        mine, lm_loss = layer_outputs(model, ids, set(range(len(self.targets))) if s.hidden_weight else set(),
                                      inputs["labels"] if s.lm_weight else None)
        loss = torch.zeros((), device=ids.device)
        if s.hidden_weight:
            pairs = [pair_loss(mine[j], wanted[t], s.normalise) for j, t in enumerate(self.targets)]
            loss = loss + s.hidden_weight * torch.stack(pairs).mean()
        if s.lm_weight:
            loss = loss + s.lm_weight * lm_loss
        return (loss, None) if return_outputs else loss
