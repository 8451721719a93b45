"""How long a run keeps each pruned model's weights folder (`[run] keep_pruned_weights`).

"always" keeps every weights/<label> to the end of the run. "while-measured" removes a folder once no
later step of the run reads it, so a run of a large model holds a few copies at once rather than one
per method. The steps of a run, in order, are its method entries (each prunes, then measures its model)
and then its phases (bench.runner.PHASED). A model's weights are read:
- in its own entry (pruning, saving, the per-model measurements);
- in the entry of every later method with `source = LABEL` (it prunes that model further), and in the
  pruning-time phase when such an entry takes it (the phase prunes the source again);
- in the throughput phases it takes part in (HF; vLLM when among `vllm.models`).
Post-training is not undone this way: an entry with `post_train` keeps its weights (its trained model
is made from them and is not made again on a resume).

The model's record (with its weights digest) and results stay; a resumed run reuses them without the
weights, and makes the weights again only for a step that must read them (bench.pruned.restore_weights).
"""

from __future__ import annotations

ALWAYS, WHILE_MEASURED = "always", "while-measured"


def steps_of(profile) -> list[str]:
    """The run's steps in order: each method entry's label, then each phase the profile measures."""
    from bench.profile import PHASED

    return [m.label for m in profile.methods] + [name for name in PHASED if name in profile.measurements]


def readers(label: str, profile) -> list[str]:
    """The steps that read the weights of `label`'s pruned model."""
    from bench.profile import measurements_of

    later = [m for m in profile.methods if m.source == label]
    steps = [label, *(m.label for m in later)]
    if any("pruning_time" in measurements_of(m.label, profile) for m in later):
        steps.append("pruning_time")
    taken = measurements_of(label, profile)
    if "throughput_hf" in taken:
        steps.append("throughput_hf")
    if "throughput_vllm" in taken and (profile.vllm.models is None or label in profile.vllm.models):
        steps.append("throughput_vllm")
    return [s for s in steps if s in steps_of(profile)]


def last_reader(profile) -> dict[str, str]:
    """{label: the last step reading its weights} of the models whose weights the run removes; {} when it keeps all."""
    if profile.run.keep_pruned_weights == ALWAYS:
        return {}
    order = steps_of(profile)
    return {m.label: max(readers(m.label, profile), key=order.index) for m in profile.methods if m.post_train is None}


def removable_after(step: str, profile) -> list[str]:
    """The labels whose weights no step after `step` reads (under "while-measured")."""
    return [label for label, last in last_reader(profile).items() if last == step]


def alive_at_each_step(profile) -> list[list[str]]:
    """Per step, the labels whose weights are on disk during it (made in their entry, kept to their last reader)."""
    order = steps_of(profile)
    last = last_reader(profile)
    return [[m.label for m in profile.methods
             if order.index(m.label) <= i <= order.index(last.get(m.label, order[-1]))] for i in range(len(order))]
