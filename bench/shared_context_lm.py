"""lm-eval's HF backend, running each shared token prefix once (accuracy backend `hf-shared`).

Multiple-choice tasks ask for the log-likelihood of several continuations of one context
(HellaSwag's four endings, ARC's choices), and items of one task often open alike (MMLU's
subject line, Winogrande's sentence before the blank). lm-eval's HFLM runs context +
continuation once per request; its `logits_cache` shares a pass only between one-token
continuations. Here the token sequences HFLM would feed are merged into a prefix tree, packed
into rows of about `row_tokens` tokens: every tree node is one token, placed at its depth
(position id), and the attention mask lets a node see its ancestors and itself only. Each
sequence is therefore computed exactly as if it ran alone, but a prefix shared by many runs
once. The vocabulary projection runs only at the nodes that predict a scored token.

Tokenisation, the last context token, left truncation to `max_length` and the greedy check are
HFLM's (`TemplateLM.loglikelihood` encodes; the window is the one of HFLM's
`_loglikelihood_tokens`), so answers agree with HFLM to float rounding. Written by hand
because neither lm-eval nor transformers scores a prefix tree of sequences in one pass.
Rolling log-likelihoods (wikitext) and generation stay HFLM's own, as does any model whose
attention this mask cannot express (see `mask_kinds`).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM

# How the bench has lm-eval score a model of any dtype: log-probabilities in float32. lm-eval would take
# them in the model's dtype and sum a continuation's in it, and a bf16 sum of ~-60 keeps steps of 0.25.
SCORING_OPTIONS = {"softmax_dtype": "float32"}


class _Row:
    """A prefix tree of token sequences, in insertion order (a node's parent comes before it)."""

    def __init__(self):
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.depths: list[int] = []
        self.children: dict[tuple[int, int], int] = {}  # (parent node or -1, token) -> node

    def __len__(self) -> int:
        return len(self.tokens)

    def missing(self, sequence) -> int:
        """How many nodes `sequence` would add."""
        node = -1
        for depth, token in enumerate(sequence):
            node = self.children.get((node, token))
            if node is None:
                return len(sequence) - depth
        return 0

    def add(self, sequence) -> list[int]:
        """Insert `sequence`; its path of nodes."""
        node, path = -1, []
        for depth, token in enumerate(sequence):
            child = self.children.get((node, token))
            if child is None:
                child = len(self.tokens)
                self.children[(node, token)] = child
                self.tokens.append(token)
                self.parents.append(node)
                self.depths.append(depth)
            node = child
            path.append(node)
        return path

    def visible(self, window: int | None) -> np.ndarray:
        """[node, node] bool: a node sees its ancestors and itself (those within `window` positions)."""
        n = len(self.tokens)
        seen = np.zeros((n, n), dtype=bool)
        for node, parent in enumerate(self.parents):
            if parent >= 0:
                seen[node] = seen[parent]
            seen[node, node] = True
        if window is not None:
            depths = np.asarray(self.depths)
            seen &= depths[:, None] - depths[None, :] < window
        return seen


class SharedContextLM(HFLM):
    """HFLM whose `loglikelihood` runs each shared token prefix once.

    `row_tokens` is the length a packed row fills up to (a longer single sequence gets a row of
    its own). Unrelated sequences share a row too: a padding token costs a whole token's work,
    while attention over a row of R tokens adds about R / 3000 of it per token for a model of
    SmolLM2's shape (2 x hidden size multiply-adds per query-key pair against ~3.5 M per token
    and layer), so full rows of a few hundred tokens cost less than padded ones.
    `max_batch_tokens` bounds a batch's padded tokens (rows x longest row), HFLM's `batch_size`
    its rows. Construct as HFLM: `SharedContextLM(pretrained=model, tokenizer=..., ...)`."""

    def __init__(self, *args, row_tokens: int = 384, max_batch_tokens: int = 2048, **kwargs):
        super().__init__(*args, **kwargs)
        self.row_tokens = int(row_tokens)
        self.max_batch_tokens = int(max_batch_tokens)
        self.mask_kinds = mask_kinds(self.model)  # None: this model keeps HFLM's path

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        # HFLM's loglikelihood_rolling hands windows with no request string and its own batch size
        if self.mask_kinds is None or self.backend != "causal" or override_bs is not None \
                or any(req[0] is None for req in requests):
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        rows, placed = self._pack(requests)
        scored = [set() for _ in rows]
        by_row: list[list[int]] = [[] for _ in rows]
        for i, (row, nodes, _) in enumerate(placed):
            scored[row].update(nodes)
            by_row[row].append(i)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for batch in self._batches(rows):
            logprobs, where = self._forward([rows[r] for r in batch], [scored[r] for r in batch])
            for b, row in enumerate(batch):
                for i in by_row[row]:
                    _, nodes, continuation = placed[i]
                    picked = logprobs[where[b][nodes]]  # [len(continuation), vocab]
                    tokens = torch.tensor(continuation, device=picked.device)
                    greedy = bool((picked.argmax(dim=-1) == tokens).all())
                    results[i] = (float(picked.gather(1, tokens[:, None]).sum()), greedy)
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def _pack(self, requests):
        """Rows of prefix trees holding what HFLM would feed per request, in sorted token order
        (neighbours share the longest prefixes); per request: (row, nodes scoring it, its tokens)."""
        fed = []
        for _, context, continuation in requests:
            assert len(context) > 0 and 0 < len(continuation) <= self.max_length
            window = (context + continuation)[-(self.max_length + 1):]  # HFLM's left truncation
            fed.append(window[:-1])  # the node at depth d predicts window[d + 1]
        rows, placed = [_Row()], [None] * len(requests)
        for i in sorted(range(len(requests)), key=lambda i: fed[i]):
            row = rows[-1]
            if len(row) and len(row) + row.missing(fed[i]) > self.row_tokens:
                row = _Row()
                rows.append(row)
            continuation = requests[i][2]
            placed[i] = (len(rows) - 1, row.add(fed[i])[-len(continuation):], continuation)
        return rows, placed

    def _batches(self, rows: list[_Row]):
        """Row numbers by length, longest first; at most batch_size rows and max_batch_tokens padded tokens."""
        order = sorted(range(len(rows)), key=lambda r: -len(rows[r]))
        max_rows = self.batch_size if isinstance(self.batch_size, int) and self.batch_size > 0 else len(rows)
        batch: list[int] = []
        for r in order:
            if batch and (len(batch) == max_rows or (len(batch) + 1) * len(rows[batch[0]]) > self.max_batch_tokens):
                yield batch
                batch = []
            batch.append(r)
        if batch:
            yield batch

    def _forward(self, rows: list[_Row], scored: list[set[int]]):
        """Log-probabilities at the scored nodes of `rows` (left-padded into one batch): a
        [scored nodes, vocab] tensor and, per row, each node's index into it (-1: not scored)."""
        width = len(rows[0])
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        keep = torch.zeros((len(rows), width), dtype=torch.bool)
        masks = {kind: torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1, 1) for kind in self.mask_kinds}
        where, counted = [], 0
        for b, row in enumerate(rows):
            start = width - len(row)  # padding sees only itself: no attention row without a key
            ids[b, start:] = torch.tensor(row.tokens)
            positions[b, start:] = torch.tensor(row.depths)
            for kind, window in self.mask_kinds.items():
                masks[kind][b, 0, start:, start:] = torch.from_numpy(row.visible(window))
            nodes = sorted(scored[b])
            keep[b, [start + n for n in nodes]] = True
            index = np.full(len(row), -1)
            index[nodes] = np.arange(counted, counted + len(nodes))
            counted += len(nodes)
            where.append(index)
        implementation = self.model.config._attn_implementation
        if implementation == "eager":  # eager attention adds the mask to the scores
            low = torch.finfo(self.model.dtype).min
            masks = {k: torch.zeros(m.shape, dtype=self.model.dtype).masked_fill(~m, low) for k, m in masks.items()}
        mask = next(iter(masks.values())) if len(masks) == 1 else masks
        mask = {k: m.to(self.device) for k, m in mask.items()} if isinstance(mask, dict) else mask.to(self.device)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            # a 2D bool logits_to_keep projects only the kept positions, flattened in row order
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask, position_ids=positions.to(self.device),
                                logits_to_keep=keep.to(self.device), use_cache=False).logits
        return F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype), where


def mask_kinds(model) -> dict[str, int | None] | None:
    """The attention masks a model needs, by layer kind, with each kind's sliding window (None: full).

    Models with `layer_types` take a dict of masks when they mix kinds; others take one mask,
    sliding when the config has a window (Mistral). None when this module cannot serve the
    model: an attention implementation other than sdpa/eager, a layer kind other than
    full/sliding, or a forward without `logits_to_keep` (or a transformers too old to take
    it as a per-row mask: `slice_logits_to_keep` brought that)."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401
    except ImportError:
        return None
    config = model.config
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager") \
            or "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return None
    window = getattr(config, "sliding_window", None)
    kinds = set(getattr(config, "layer_types", None) or [])
    if not kinds:
        return {"full_attention": window}
    if not kinds <= {"full_attention", "sliding_attention"}:
        return None
    return {kind: window if kind == "sliding_attention" else None for kind in sorted(kinds)}
