"""How the models of a run stand to each other through post-training and re-pruning (the same pruning
before training, the random-init control, the model a re-pruned one came from), and the training loss
curves the post-training claims pair: read from the run (`suites.evidence`), nothing computed here."""

from __future__ import annotations

import math

from suites.evidence import Model, NotMeasured, Run


def same_pruning(a: Model, b: Model) -> bool:
    """Whether the pruning left `a` and `b` the same model: the same fingerprint of their pruned stage, or
    pruned with the same settings (one pruning in two entries of a profile: one without post_train, one
    post-training it, another training it from random weights)."""
    return a.pruning_fingerprint == b.pruning_fingerprint or (
        a.prune_settings_hash is not None and a.prune_settings_hash == b.prune_settings_hash)


def before_post_training(run: Run, key: str) -> list[str]:
    """The models of the run that are `key`'s post-trained model before its training."""
    model = run.models[key]
    return [k for k, m in run.models.items() if k != key and m.stage == "pruned" and same_pruning(model, m)]


def random_init_controls(run: Run, key: str) -> list[str]:
    """The controls of a post-trained model: the same recipe on a randomly initialised model of its
    pruned model's shape (the same pruning, `random_init = true` in its post_train)."""
    model = run.models[key]
    recipe = model.post_training.get("recipe")
    return [k for k, m in run.models.items() if k != key and m.stage == "random-init"
            and m.post_training.get("recipe") == recipe and same_pruning(model, m)]


def re_pruned_from(run: Run, key: str) -> list[str]:
    """The model a re-pruned model was pruned from (its record's `pruned_from`), when the run has it."""
    source = run.models[key].record.get("pruned_from") or {}
    return [k for k, m in run.models.items() if k != key and (
        m.fingerprint == source.get("fingerprint"))]


RELATIONS = {"before-post-training": before_post_training, "random-init-control": random_init_controls,
             "re-pruned-from": re_pruned_from}  # a claim's `against` named by how it relates to its subject


# --- post-training: the loss curves ---------------------------------------------------------------------

LOSS_TAIL = 0.1  # the share of the logged steps, the last ones, whose loss is what a training reached


def loss_curve(run: Run, key: str) -> list[dict]:
    """A post-trained model's loss curve ({step, loss, tokens} per logged step)."""
    curve = run.models[key].post_training.get("loss_curve") if key in run.models else None
    if not curve:
        raise NotMeasured(f"{key}: no loss curve (not post-trained by the bench, or nothing logged)")
    return curve


def paired_loss_tail(run: Run, a: str, b: str) -> tuple[list[float], list[float], list[int]]:
    """The losses of two trainings at the last LOSS_TAIL of the steps both logged, step by step: two
    trainings of one recipe on the same text and seed read the same batches at the same step."""
    losses = [{p["step"]: p["loss"] for p in loss_curve(run, k)} for k in (a, b)]
    steps = sorted(set(losses[0]) & set(losses[1]))
    if not steps:
        raise NotMeasured(f"{a} and {b} logged no step in common")
    tail = steps[-max(1, math.ceil(LOSS_TAIL * len(steps))):]
    return [losses[0][s] for s in tail], [losses[1][s] for s in tail], tail
