"""The post-training recipes and their hyper-parameters, each a declared schema (unknown keys are errors).

- `continue`: LaCo's continued training (§4.1, Appendix C): a full fine-tune with AdamW, lr 2e-4,
  β 0.9/0.95, a cosine schedule, weight decay 0.1, gradient clipping at 1.0. The paper states no
  warm-up.
- `lora`: LLM-Pruner's recovery: LoRA of rank 8, alpha 16, dropout 0.05 on the attention and MLP
  projections, lr 1e-4 (source: LLM-Pruner's README/scripts as described; its optimiser is
  transformers' AdamW with the library's defaults, a linear schedule with 100 warm-up steps of a run
  of about 1.5k steps, here about 6% of the steps). The adapters are merged into the weights at the end.
- `distill`: CoMe's hierarchical distillation as `laco.distill` implements it (see there); its
  optimiser is LaCo's (this project's choice: CoMe's own settings are not reproduced).

The sizes are scaled to a small model on a few CPU cores and stated in every record: 4 sequences of
512 tokens a step and 102,400 tokens in all (the paper: 32 sequences of 4096 tokens a step, about
1 billion tokens). Every one of them can be overridden with `--param KEY=VALUE`.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import Field, model_validator

from laco import LacoError
from laco.config import Strict, validate


class Recipe(Strict):
    """What every recipe takes: the optimiser, the schedule, the sizes and the logging."""

    lr: float = Field(gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    weight_decay: float = Field(0.1, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # of the optimiser steps
    seq_len: int = Field(512, ge=2)  # tokens per training sequence (the bench's perplexity window)
    batch_size: int = Field(4, ge=1)  # sequences per optimiser step
    micro_batch_size: int = Field(1, ge=1)  # sequences per forward pass (memory); batch_size is a multiple
    tokens: int = Field(102_400, ge=1)  # training tokens in all; steps = tokens // (batch_size * seq_len)
    log_every: int = Field(1, ge=1)  # optimiser steps between two points of the loss curve

    @model_validator(mode="after")
    def _fits(self):
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of micro_batch_size {self.micro_batch_size}")
        if self.tokens < self.tokens_per_step:
            raise ValueError(f"tokens {self.tokens} is less than one step of batch_size x seq_len = {self.tokens_per_step}")
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        return self.tokens // self.tokens_per_step


class Continue(Recipe):
    lr: float = Field(2e-4, gt=0)


class Lora(Recipe):
    lr: float = Field(1e-4, gt=0)
    beta2: float = Field(0.999, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "linear"
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)


class Distill(Recipe):
    lr: float = Field(2e-4, gt=0)
    hidden_weight: float = Field(1.0, ge=0)  # weight of the layer-pair MSE
    lm_weight: float = Field(0.0, ge=0)  # weight of the language-model loss added to it
    normalise: bool = True  # divide each pair's MSE by the teacher's mean square at that layer

    @model_validator(mode="after")
    def _some_loss(self):
        if self.hidden_weight == 0 and self.lm_weight == 0:
            raise ValueError("hidden_weight and lm_weight are both 0: nothing to learn from")
        return self


RECIPES: dict[str, type[Recipe]] = {"continue": Continue, "lora": Lora, "distill": Distill}

SOURCES: dict[str, str] = {
    "continue": "LaCo §4.1 / Appendix C: full fine-tune, AdamW lr 2e-4, betas 0.9/0.95, cosine, weight decay 0.1, clip 1.0",
    "lora": "LLM-Pruner's recovery (its README/scripts as described): LoRA r 8, alpha 16, dropout 0.05, lr 1e-4, "
            "on q/k/v/o and gate/up/down, merged into the weights",
    "distill": "CoMe's hierarchical distillation as laco.distill implements it: each pruned layer's output against "
               "the dense model's after the last original layer it stands for",
}

SCALED = ("sizes scaled to the model and the machine: batch_size sequences of seq_len tokens a step, tokens in all "
          "(LaCo's Appendix C: 32 sequences of 4096 tokens a step, about 1 billion tokens)")


def recipe_settings(name: str, params: dict) -> Recipe:
    """The recipe's validated hyper-parameters: an unknown recipe, an unknown key or a bad value is one line."""
    if name not in RECIPES:
        close = difflib.get_close_matches(name, RECIPES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LacoError(f"unknown post-training recipe {name!r}{hint} (known: {', '.join(RECIPES)})")
    schema = RECIPES[name]
    unknown = sorted(set(params) - set(schema.model_fields))
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, schema.model_fields, n=1)]
        hint = f"; did you mean {close[0]!r}?" if len(unknown) == 1 and close else ""
        raise LacoError(f"recipe {name} does not take {', '.join(unknown)}{hint} "
                        f"(its parameters: {', '.join(schema.model_fields)})")
    return validate(params, schema, f"recipe {name}")
