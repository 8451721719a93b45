"""A one-screen table of a run directory, printed at the end of `laco bench`.

Only a glance at what was measured; judging the figures against claims is the suites' job.
"""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _cell(doc: dict | None, pick) -> str:
    if doc is None:
        return "-"
    if doc["status"] != "ok":
        return "n/a"
    value = pick(doc["values"])
    return "-" if value is None else f"{value:.4g}"


def summary_table(run_dir: str | Path) -> str:
    run = Path(run_dir)
    methods = (_load(run / "run.json") or {}).get("profile", {}).get("methods", [])
    rows = []
    for key in ["dense", *(m["label"] for m in methods)]:
        model = _load(run / "models" / f"{key}.json")
        if model is None:  # a method whose pruning failed
            continue
        result = lambda m: _load(run / "results" / key / f"{m}.json")  # noqa: E731
        acc = result("accuracy")
        params = (model["record"] or {}).get("parameters") or {}
        rows.append([
            key,
            f"{params['pruning_ratio']:.1%}" if params else "0%",
            _cell(acc, lambda v: _mean([t[t["metric"]] for t in v["tasks"].values() if t[t["metric"]] is not None])),
            _cell(result("perplexity"), lambda v: v["windows"]["ppl"]),
            _cell(result("perplexity"), lambda v: (v.get("lm_eval_wikitext") or {}).get("word_perplexity")),
            _cell(result("memory"), lambda v: v["param_mb"]),
            _cell(result("memory"), lambda v: v["peak_mb"]),
            _cell(result("throughput_hf"), lambda v: v["total_tokens_per_s"]["median"]),
            _cell(result("throughput_vllm"), lambda v: v["total_tokens_per_s"]["median"]),
            _cell(result("pruning_time"), lambda v: v["seconds"]),
        ])
    headers = ["model", "pruned", "mean acc", "ppl (windows)", "wikitext word ppl", "param MB", "peak MB",
               "hf tok/s", "vllm tok/s", "prune s"]
    return tabulate(rows, headers=headers, tablefmt="github")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
