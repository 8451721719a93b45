"""The post-trained model of a method entry (`post_train = {...}` in the profile): its pruned model trained
further by the core (`laco.posttrain.run_post_training`), saved beside it under weights/<label>+post-trained,
and measured in its place.

models/<label>.json then describes the post-trained model (fingerprint, record with `post_training`, saved,
weights_sha256), keeps the pruning stage under "pruned" and what decides the training under
"post_train_settings". A resumed run reuses a post-trained model whose settings and weights are unchanged. A
killed post-training leaves no record of itself (its folder is written atomically, the record after it), so the
next run trains again from the saved pruned model, which it reuses.

The training text is disjoint from what the run evaluates: by default the wikitext-2 test documents the run's
perplexity and lm-eval wikitext never read, minus the model's calibration documents
(`laco.training_text.unread_training`); documents the profile names must start after those the run reads.
"""

from __future__ import annotations

import shutil

from bench.calibration import first_unread_document, read_by_perplexity
from bench.context import RunContext
from bench.profile import MethodSettings
from bench.store import RunStore, settings_hash
from bench.subject import Subject, pruned_identity
from laco import LacoError
from laco.faults import kill_point
from laco.provenance import folder_weights_sha256

STAGE_FIELDS = ("fingerprint", "record", "saved", "weights_sha256")  # what tells the model a record describes
POST_TRAIN_KEYS = ("pruned", "post_train_settings", "post_train_settings_hash")


def pruning_stage(doc: dict) -> dict:
    """A model record (models/<label>.json) as its pruning left it."""
    return {**{k: v for k, v in doc.items() if k not in POST_TRAIN_KEYS}, **doc.get("pruned", {})}


def post_trained_subject(method: MethodSettings, ctx: RunContext, pruned: Subject) -> Subject:
    """The entry's pruned model post-trained: reused when its settings and weights are unchanged, else trained."""
    settings = post_train_settings(method, ctx, pruned)
    kept = reusable(method, ctx, settings)
    if kept is not None:
        return kept
    pruned.release()  # the trainer loads its own copy from the saved folder
    return post_train_and_save(method, ctx, pruned, settings)


def post_train_settings(method: MethodSettings, ctx: RunContext, pruned: Subject) -> dict:
    """Everything that decides the post-trained weights (hashed: a change trains again)."""
    from bench import store
    from laco.recipes import recipe_settings

    post, m = method.post_train, ctx.profile.model
    return {"recipe": post.recipe, "hyperparameters": recipe_settings(post.recipe, post.params).model_dump(),
            "text": training_text(method, ctx), "input": pruned.fingerprint, "dtype": m.pruning_dtype(),
            "device": m.device, "seed": ctx.profile.seed, "code": store.code_key(),
            # both absent when false: older settings hash alike
            **({"random_init": True} if post.random_init else {}), **({"bf16_autocast": True} if autocast(m) else {})}


def autocast(m) -> bool:
    """Train under bfloat16 autocast when the run measures in bfloat16 and prunes in float32: the weights and
    the optimizer stay in float32, the matmuls run in bf16 (fast where bench.dtype chose bf16 for the run)."""
    return m.dtype == "bfloat16" and m.pruning_dtype() == "float32"


def training_text(method: MethodSettings, ctx: RunContext) -> dict:
    """Where the training text comes from: the documents named, or those the run's perplexity leaves unread."""
    documents = method.post_train.documents
    if documents != "unread":
        return {"documents": list(documents)}
    window, n_windows, lm_eval_documents = read_by_perplexity(ctx.profile)
    return {"unread": {"window": window, "n_windows": n_windows, "lm_eval_documents": lm_eval_documents}}


def check_training_text(method: MethodSettings, where: str, ctx: RunContext) -> None:
    """Before anything runs: the text comes from the data dir, and documents named lie after those evaluated."""
    from laco.calibration import wikitext_documents

    if ctx.data_dir is None:
        raise LacoError(f"{where}.post_train needs --data-dir: it trains on wikitext-2 test documents read from it")
    documents = method.post_train.documents
    if documents == "unread":
        return
    first, end = documents
    unread = first_unread_document(ctx.profile, ctx.data_dir)
    if first < unread:
        raise LacoError(f"{where}.post_train.documents starts at document {first}, but this run's perplexity reads "
                        f"documents up to {unread - 1}: start at {unread} or later so training and evaluation share no text")
    available = len(wikitext_documents(ctx.data_dir))
    if end > available:
        raise LacoError(f"{where}.post_train.documents ends at {end}, but wikitext-2 test has {available} documents")


def reusable(method: MethodSettings, ctx: RunContext, settings: dict) -> Subject | None:
    store, folder = ctx.store, ctx.store.post_trained_dir(method.label)
    doc = store.read_model(method.label) or {}
    if not (doc.get("post_train_settings_hash") == settings_hash(settings) and (folder / "laco.json").is_file()
            and doc.get("weights_sha256") == folder_weights_sha256(folder)):
        return None
    return Subject(method.label, method.name, doc["fingerprint"], doc["record"], ctx.pruned_load_args(folder),
                   folder=str(folder), prune_call=doc.get("prune_call"))


def post_train_and_save(method: MethodSettings, ctx: RunContext, pruned: Subject, settings: dict) -> Subject:
    """Train the saved pruned model by the core, save it beside, and make the entry's record describe it."""
    from laco.posttrain import run_post_training

    post, m, text = method.post_train, ctx.profile.model, settings["text"]
    folder = ctx.store.post_trained_dir(method.label)
    source = {"train_docs": "{}:{}".format(*text["documents"])} if "documents" in text else {
        "perplexity": tuple(text["unread"].values())}  # the core leaves out what it reads and the calibration
    _, record = run_post_training(pruned.folder, folder, post.recipe, dict(post.params), **source, seed=ctx.profile.seed,
                                  random_init=post.random_init, dtype=m.pruning_dtype(), bf16=autocast(m), device=m.device,
                                  progress=ctx.progress, force=True, data=ctx.data_dir)
    kill_point("bench:post-trained")
    weights = folder_weights_sha256(folder)
    identity = pruned_identity(record, weights, m)
    stage = pruning_stage(ctx.store.read_model(method.label))
    ctx.store.write_model({**stage, "fingerprint": identity, "record": record, "saved": str(folder),
                           "weights_sha256": weights, "pruned": {k: stage[k] for k in STAGE_FIELDS},
                           "post_train_settings": settings, "post_train_settings_hash": settings_hash(settings)})
    return Subject(method.label, method.name, identity, record, ctx.pruned_load_args(folder), folder=str(folder),
                   prune_call=stage.get("prune_call"))


def drop_post_training(label: str, store: RunStore) -> None:
    """An entry no longer post-trained: its record back to the pruned model, the trained weights gone."""
    doc = store.read_model(label)
    if doc and "pruned" in doc:
        store.write_model(pruning_stage(doc))
    shutil.rmtree(store.post_trained_dir(label), ignore_errors=True)
