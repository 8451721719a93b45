"""The shared-prefix accuracy path gives lm-eval HFLM's answers: per request and per item."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import tiny_loaded
from lm_eval.models.huggingface import HFLM

from bench.shared_context_lm import SharedContextLM, mask_kinds
from bench.tasks import lm_eval_tasks_dir

TOLERANCE = 1e-3  # the bound on per-request log-likelihood differences (float32)


def greedy_tokens(model, context: list[int], n: int) -> list[int]:
    """The model's own argmax continuation of `context`, so some requests are greedy."""
    tokens = list(context)
    with torch.no_grad():
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(context):]


def token_requests(model, max_length: int) -> list:
    """Token-level requests as TemplateLM hands them to `_loglikelihood_tokens`: contexts with
    several continuations, continuations that extend one another, duplicates, one-token
    continuations, contexts longer than max_length (left truncation) and greedy continuations."""
    rng = random.Random(0)
    tokens = lambda n: [rng.randrange(3, 259) for _ in range(n)]  # noqa: E731 (byte tokens, no specials)
    requests = []
    for item, length in enumerate([3, 9, 20, 33, max_length - 2, max_length + 15]):
        context = [1] + tokens(length)
        endings = [tokens(rng.randint(1, 6)) for _ in range(3)]
        endings += [endings[0] + tokens(2), endings[1][:1], greedy_tokens(model, context, 3)]
        requests += [((f"ctx{item}", f"cont{j}"), context, ending) for j, ending in enumerate(endings)]
    requests.append(requests[4])  # the same request twice
    return requests


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2"])  # mistral, qwen2: sliding window 16
@pytest.mark.parametrize("max_length", [256, 40])
def test_each_request_scores_as_hflm_does(model_type, max_length):
    loaded = tiny_loaded(model_type)
    common = dict(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=4, max_length=max_length, device="cpu")
    reference, shared = HFLM(**common), SharedContextLM(**common, row_tokens=64, max_batch_tokens=160)
    assert shared.mask_kinds is not None  # the shared path runs, not HFLM's fallback
    requests = token_requests(loaded.model, max_length)
    # rows hold unrelated sequences too, kept apart by the mask alone
    assert any(len({seq[:3] for seq in row}) > 1 for row in sequences_per_row(shared, requests))

    fed = []
    hook = loaded.model.model.embed_tokens.register_forward_hook(lambda m, args, out: fed.append(args[0].numel()))
    expected = reference._loglikelihood_tokens(requests, disable_tqdm=True)
    hflm_tokens, fed[:] = sum(fed), []
    got = shared._loglikelihood_tokens(requests)
    hook.remove()

    assert len(got) == len(requests)
    for (ll, greedy), (want_ll, want_greedy) in zip(got, expected, strict=True):
        assert abs(ll - want_ll) < TOLERANCE and greedy == want_greedy
    assert sum(g for _, g in expected) >= 4  # greedy where the context fits (4 items): the flag is tested
    assert sum(fed) < hflm_tokens  # prefixes ran once


def sequences_per_row(lm, requests) -> list[set]:
    rows, placed = lm._pack(requests)
    per_row = [set() for _ in rows]
    for (row, _, _), (_, context, continuation) in zip(placed, requests, strict=True):
        per_row[row].add(tuple(context + continuation))
    return per_row


def test_mask_kinds_follow_the_config():
    assert mask_kinds(tiny_loaded("llama").model) == {"full_attention": None}
    assert mask_kinds(tiny_loaded("mistral").model) == {"full_attention": 16}  # one sliding mask for all layers
    assert mask_kinds(tiny_loaded("qwen2").model) == {"full_attention": None, "sliding_attention": 16}

    def model(attn="sdpa", layer_types=None):
        config = SimpleNamespace(_attn_implementation=attn, layer_types=layer_types, sliding_window=None)
        return SimpleNamespace(config=config, forward=lambda input_ids, logits_to_keep=0: None)

    assert mask_kinds(model()) == {"full_attention": None}
    # what this mask cannot express keeps HFLM's own path
    assert mask_kinds(model(attn="flex_attention")) is None
    assert mask_kinds(model(layer_types=["full_attention", "chunked_attention"])) is None


def test_rolling_loglikelihood_is_hflm_own():
    from lm_eval.api.instance import Instance

    loaded = tiny_loaded("llama")
    common = dict(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=2, max_length=32, device="cpu")
    requests = [Instance("loglikelihood_rolling", {}, ("a document longer than one window of thirty-two tokens",), 0)]
    want = HFLM(**common).loglikelihood_rolling(requests, disable_tqdm=True)
    assert SharedContextLM(**common).loglikelihood_rolling(requests, disable_tqdm=True) == want


def write_tiny_arc_jsonl(path) -> None:
    """Eight ARC-format multiple-choice items (four choices each) of random words."""
    rng = random.Random(1)
    words = "red green blue stone water river light dark quick slow bird fish tree leaf".split()
    phrase = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
    rows = [{"id": f"q{i}", "question": f"Which {phrase(rng.randint(2, 12))}?",
             "choices": {"text": [phrase(rng.randint(1, 5)) for _ in range(4)], "label": list("ABCD")},
             "answerKey": "ABCD"[i % 4]} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_tiny_arc_task(folder, name: str = "tiny_mc") -> str:
    """A tiny multiple-choice task read from local JSONL through lm-eval's arc_easy YAML."""
    data = folder / "tiny.jsonl"
    write_tiny_arc_jsonl(data)
    config = {"include": str(lm_eval_tasks_dir() / "arc" / "arc_easy.yaml"), "task": name, "dataset_path": "json",
              "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(data)}},
              "training_split": None, "validation_split": None}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return name


def test_items_through_lm_eval_match_hflm(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    name = write_tiny_arc_task(tmp_path)
    loaded = tiny_loaded("llama")
    common = dict(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=4, max_length=64, device="cpu")

    def samples(lm):
        manager = TaskManager(include_defaults=False, include_path=str(tmp_path))
        out = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, log_samples=True, bootstrap_iters=0)
        return sorted(out["samples"][name], key=lambda s: s["doc_id"])

    want, got = samples(HFLM(**common)), samples(SharedContextLM(**common, row_tokens=48))
    assert [s["doc_id"] for s in got] == list(range(8))
    for a, b in zip(got, want, strict=True):
        assert len(a["resps"]) == 4  # one request per choice
        for (ll, greedy), (want_ll, want_greedy) in zip([r[0] for r in a["resps"]], [r[0] for r in b["resps"]],
                                                        strict=True):
            assert abs(float(ll) - float(want_ll)) < TOLERANCE and greedy == want_greedy
        assert (a["acc"], a["acc_norm"]) == (b["acc"], b["acc_norm"])


def test_accuracy_backend_hf_shared_scores_as_hf(tmp_path, monkeypatch):
    """bench.accuracy's `hf-shared` backend runs SharedContextLM and gives the `hf` backend's scores."""
    import bench.shared_context_lm
    from bench.accuracy import evaluate
    from bench.store import RunStore
    from bench.subject import Subject
    from bench.tasks import prepare_tasks

    data = tmp_path / "data"
    data.mkdir()
    write_tiny_arc_jsonl(data / "tiny.jsonl")
    (data / "tasks.toml").write_text('[tasks.tiny_mc]\ninclude = "arc/arc_easy.yaml"\nfiles = { test = "tiny.jsonl" }\n')
    ctx = SimpleNamespace(store=RunStore(tmp_path / "run"))
    prepared = prepare_tasks(["tiny_mc"], data, tmp_path / "tasks")
    ctx.tasks = lambda: prepared
    runs = []
    real = bench.shared_context_lm.SharedContextLM._loglikelihood_tokens
    monkeypatch.setattr(bench.shared_context_lm.SharedContextLM, "_loglikelihood_tokens",
                        lambda self, *a, **k: runs.append(len(a[0])) or real(self, *a, **k))
    loaded = tiny_loaded("llama")
    subject = Subject("dense", "dense", "tiny", {}, {})
    subject.adopt(loaded.model, loaded.tokenizer)
    scores = {}
    for backend in ("hf", "hf-shared"):
        settings = {"backend": backend, "device": "cpu", "dtype": "float32", "max_length": 64, "batch_size": 4,
                    "seed": 0, "bootstrap_iters": 0}
        raw = evaluate(subject, {"tiny_mc": {"limit": None, "num_fewshot": 0}}, settings, ctx)
        scores[backend] = (raw["n"]["tiny_mc"], raw["results"]["tiny_mc"]["acc,none"], raw["results"]["tiny_mc"]["acc_norm,none"])
    assert runs == [32]  # the shared path scored the 8 items x 4 choices, once (hf ran HFLM)
    assert scores["hf-shared"] == scores["hf"] and scores["hf"][0] == 8
