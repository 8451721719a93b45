"""The report's tables of measured figures, shaped like the paper's: dense beside the paper's dense
rows, scores per benchmark with retention, perplexity, pruning time, and compute, memory and
throughput. Every interval is read from the run's figures (suites.figures); nothing is computed here."""

from __future__ import annotations

import numpy as np

from suites import evidence as ev
from suites.claims import Claims
from suites.evidence import DENSE, MEASUREMENTS, NotMeasured, Run
from suites.figures import Figures
from suites.gate import planned
from suites.markdown import compact_table, coverage_of, details, num, ratio_cell, table, times_interval

DECODE = "decode_tokens_per_s"


def dense_reproduction_section(run: Run, claims: Claims) -> str:
    """Our dense scores beside the paper's Dense* row, with the protocol differences that separate them."""
    paper = claims.paper
    model, own = paper.model_of(run.profile_name)
    try:
        items = ev.task_items(run, DENSE)
    except NotMeasured as exc:
        return f"## Dense reproduction\n\nNot measured: {exc}."
    rows = []
    for task, t in items.items():
        found = paper.benchmark_of_task(task)
        column, bench = found if found else ("-", None)
        fig = paper.figure(1, column, model, "dense") if found else None
        official = paper.figure(1, column, model, "dense-official") if found else None
        rows.append([task, f"{t.metric} n={t.n}", f"{100 * t.score:.1f}", f"{100 * t.chance_level:.1f}", column,
                     num(fig and fig.value, "{:.2f}"), num(official and official.value, "{:.2f}"),
                     (bench.note if bench else "no column of the paper's Table 1")])
    other = "" if own else (f" The paper did not prune this run's model: the figures shown are {model}'s, "
                            "another model, for orientation only.")
    return "\n".join([
        "## Dense reproduction",
        "",
        details(f"Our dense scores beside the paper's dense rows of Table 1 for {model}",
                f"Our dense scores (lm-eval, %) beside the paper's Dense\\* (the authors' reproduction) and Dense (OpenCompass "
        f"leaderboard) rows of Table 1 for {model}.{other} Protocol differences the transcription documents: the paper "
        "scores with OpenCompass, mostly in PPL mode (the option of lowest perplexity), where lm-eval reports acc or "
        "acc_norm; the paper's WSC is SuperGLUE WSC (104 items, lm-eval `wsc`), not `wsc273`; lm-eval's `race` scores "
        "one question per article (the last), OpenCompass every question. Every cross-harness difference is approximate.",
                "",
                table(rows, ["task", "metric", "ours", "chance", "paper column", "paper Dense*", "paper Dense",
                             "protocol note"])),
    ])
def accuracy_section(run: Run, figures: Figures) -> tuple[str, dict[str, dict[str, float]]]:
    """Per-benchmark scores with chance, average and the two retentions with their paired intervals."""
    scores = {}
    for key in run.models:
        try:
            scores[key] = ev.task_items(run, key)
        except NotMeasured:
            continue
    if not scores:
        return "## Accuracy\n\nNo model has per-item accuracy results.", {}
    tasks = list(dict.fromkeys(t for items in scores.values() for t in items))
    dense = scores.get(DENSE)
    rows, retention = [], {}
    if dense:
        chance = figures.average(DENSE, [t for t in tasks if t in dense], "chance_level")
        rows.append(["chance", "-", *[num(100 * dense[t].chance_level) if t in dense else "-" for t in tasks],
                     num(100 * chance), "-", "-"])
    for key, items in scores.items():
        avg = figures.average(key, tasks)
        per, above = "-", "-"
        if dense and key != DENSE:
            per, above = _retention_cells(figures, key)
            retention[key] = figures.kept(key, tasks)
        kept = retention.get(key, {})
        rows.append([key, ratio_cell(run, key), *[_score(items, kept, t) for t in tasks], num(avg and 100 * avg), per, above])
    first = next(iter(scores.values()))
    protocol = ", ".join(f"{t} {first[t].metric} (n={first[t].n})" for t in tasks if t in first)
    lines = [
        f"Scores in % (lm-eval; metric and items per task: {protocol}), with the score kept (% of dense's) in brackets. "
        "Avg.: mean over the benchmarks. Per.: mean over "
        "benchmarks of pruned / dense, the paper's Table 2 definition. Above chance: (Avg. − chance) / (dense Avg. − "
        "chance). Both with their 95% paired-bootstrap interval.",
        "",
        table(rows, ["model", "pruned", *tasks, "Avg.", "Per. % [95%]", "above chance % [95%]"]),
    ] + _task_notes(run, scores)
    text = ["## Accuracy", "", details(f"Scores of {len(scores)} models on {len(tasks)} benchmarks, Per. and above chance",
                                       *lines)]
    if retention:
        text += ["", f"![score kept per benchmark]({run.id}/retention.png)"]
    return "\n".join(text), retention


def _score(items: dict, kept: dict[str, float], task: str) -> str:
    """A model's score on a task, with the share of dense's it kept: '45.0 (78%)'."""
    if task not in items:
        return "-"
    return f"{100 * items[task].score:.1f}" + (f" ({kept[task]:.0%})" if task in kept else "")


def _retention_cells(figures: Figures, key: str) -> tuple[str, str]:
    try:
        r = figures.retention(key)
    except NotMeasured as exc:
        return f"({exc})", f"({exc})"
    return r.per.fmt(".1f", 100), r.above_chance.fmt(".1f", 100)


def _task_notes(run: Run, scores: dict) -> list[str]:
    """What the accuracy results say about their tasks: notes, and the benchmarks not measured."""
    lines, notes, not_available = [], {}, {}
    for key in scores:
        notes.update(run.ok(key, "accuracy").values.get("notes") or {})
    if notes:
        lines += ["", "Notes on the tasks: " + "; ".join(f"{t}: {n}" for t, n in sorted(notes.items())) + "."]
    for key in scores:
        not_available.update(run.ok(key, "accuracy").values.get("not_available") or {})
    if not_available:
        lines += ["", "Not measured (no lm-eval task or no local data): "
                  + "; ".join(f"{b} ({why})" for b, why in sorted(not_available.items())) + "."]
    return lines


def by_design(run: Run, names: tuple[str, ...]) -> str:
    """One line in place of a section whose measurements the profile skips for every model ('' otherwise)."""
    if any(planned(run, key, n) or run.measurement(key, n) for key in run.models for n in names):
        return ""
    measured = ", ".join(run.profile.get("measurements") or MEASUREMENTS)
    return f"Not measured by the profile's design (it measures {measured})."


def perplexity_section(run: Run, figures: Figures) -> str:
    skipped = by_design(run, ("perplexity",))
    if skipped:
        return f"## Perplexity\n\n{skipped}"
    rows, protocol, word = [], "", {}
    for key in run.models:
        m = run.ok(key, "perplexity")
        if m is None:
            rows.append([key, ratio_cell(run, key), "-", "-", "-", run.missing_reason(key, "perplexity")])
            continue
        w = m.values.get("windows") or {}
        lm = m.values.get("lm_eval_wikitext") or {}
        protocol = f"{w.get('dataset', '?')}, {w.get('window', '?')}-token windows, {w.get('n_windows', '?')} windows"
        if lm.get("word_perplexity") is not None:
            word[key] = (w.get("ppl"), lm["word_perplexity"], lm.get("documents"))
        vs = "-"
        if key != DENSE:
            try:
                vs = times_interval(figures.ppl_ratio(key, DENSE))
            except NotMeasured as exc:
                vs = str(exc)
        rows.append([key, ratio_cell(run, key), num(w.get("ppl"), "{:,.2f}"), vs, num(lm.get("word_perplexity"), "{:,.2f}"),
                     ""])
    text, _, _ = compact_table(rows, ["model", "pruned", "PPL (windows)", "vs dense [95%]", "lm-eval wikitext word PPL",
                                      "note"], keys=2)
    body = [f"Lower is better. Protocol: {protocol or 'not measured'}; the ratio to dense pairs the windows (95% bootstrap "
            "interval over windows).", *_word_perplexity_note(word), "", text]
    return "\n".join(["## Perplexity", "", details(f"Perplexity of {len(rows)} models on the same windows", *body)])


def _word_perplexity_note(word: dict[str, tuple]) -> list[str]:
    """How many documents lm-eval's word perplexity read, and where it orders two models the other way
    round from the windows (it reads other text, whole documents, so it may)."""
    if not word:
        return []
    docs = sorted({d for _, _, d in word.values() if d is not None})
    read = f"{' or '.join(map(str, docs))} of wikitext-2's 62 test documents" if docs else "an unrecorded number of documents"
    keys = [k for k in word if k != DENSE and word[k][0] is not None]
    swapped = [f"{a} and {b}" for i, a in enumerate(keys) for b in keys[i + 1:]
               if (word[a][0] - word[b][0]) * (word[a][1] - word[b][1]) < 0]
    order = (f" In this run it orders {'; '.join(swapped[:3])}{' and more' if len(swapped) > 3 else ''} the other way "
             "round from the windows." if swapped else "")
    return ["", f"The lm-eval wikitext word perplexity read {read} (`lm_eval_limit`): other text than the windows, "
            f"scored by whole documents, so its ordering of methods can differ from the windowed one.{order} The "
            "windowed figure is the one the claims judge."]


def pruning_time_section(run: Run) -> str:
    skipped = by_design(run, ("pruning_time",))
    if skipped:
        return f"## Pruning time\n\n{skipped}"
    rows = []
    for key in run.models:
        if key == DENSE:
            continue
        try:
            seconds = ev.pruning_seconds(run, key)
        except NotMeasured as exc:
            rows.append([key, run.models[key].method, ratio_cell(run, key), "-", "-", str(exc)])
            continue
        rows.append([key, run.models[key].method, ratio_cell(run, key), f"{np.median(seconds):.2f}",
                     f"{min(seconds):.2f}–{max(seconds):.2f}", f"{len(seconds)} timings"])
    return "\n".join(["## Pruning time", "",
                      details(f"Seconds of the pruning step of {len(rows)} models",
                              "The pruning step alone (no load, no save), as the paper's Table 4 times it; median and "
                              "range of repeated timings on this machine. LaCo in target mode: the final search at the T "
                              "the threshold search chose.", "",
                              table(rows, ["model", "method", "pruned", "median s", "range s", "note"]))])


def efficiency_section(run: Run, figures: Figures) -> str:
    rows, settings = [], {}
    for key in run.models:
        f = _flops(run, key)
        mem = run.ok(key, "memory")
        ideal, bound = figures.bounds(key, DENSE, DECODE)
        cells = [key, ratio_cell(run, key), num(f and f.get("parameters") and f["parameters"] / 1e6, "{:.1f}M"),
                 num(f and f.get("layers"), "{}"),
                 num(f and f.get("decode_flops_per_token") and f["decode_flops_per_token"] / 1e6, "{:.1f}"),
                 num(ideal, "×{:.3f}") if key != DENSE else "-",
                 num(bound, "×{:.3f}") if key != DENSE else "-",
                 num(mem and mem.values.get("param_mb")), num(mem and mem.values.get("peak_mb"))]
        for engine in ("hf", "vllm"):
            cells += _throughput_cells(run, figures, key, engine, settings)
        rows.append(cells)
    setting_text = "; ".join(f"{e}: " + ", ".join(f"{k}={v}" for k, v in x.items()) for e, x in settings.items())
    text, dropped, empty = compact_table(rows, EFFICIENCY_COLUMNS, keys=2)
    skipped = by_design(run, ("flops", "memory", "throughput_hf", "throughput_vllm"))
    if skipped or not text:
        return f"## Compute, memory and throughput\n\n{skipped or 'Nothing measured.'}"
    left = (f" Left out, nothing measured: {', '.join(dropped)}" if dropped else "") + (
        f"{';' if dropped else ' Left out:'} {empty} models with nothing measured" if empty else "")
    return "\n".join([
        "## Compute, memory and throughput",
        "",
        details(
            "FLOPs, memory and tokens/s of every model, with the decode speed-up over dense",
            "FLOPs per decoded token (at the workload's context lengths, counted by torch's FlopCounterMode) and the "
            "compute-bound ideal speed-up over dense (dense FLOPs / model FLOPs); the ceiling is the larger of that and "
            "the layer ratio (a decode step is per-layer overhead plus FLOP-proportional work, so its speed-up lies "
            "between the two). Memory in MB: parameters, and the peak of a fixed forward + generate workload. Throughput "
            "from interleaved rounds (every model timed in each round, dense first): prefill tokens/s (input tokens over "
            "the time to the first token) and decode tokens/s (the tokens after the first over the rest of the time), "
            "median (min..max), and the decode speed-up over dense with its 95% interval over rounds. A speed-up whose "
            f"whole interval lies above the ceiling is flagged *implausible: noise*. Settings: {setting_text or '-'}."
            + (f"{left}." if left else ""),
            "",
            text),
    ])


EFFICIENCY_COLUMNS = ["model", "pruned", "params", "layers", "decode MFLOPs/token", "ideal speed-up", "ceiling", "param MB",
                      "peak MB", "HF prefill tok/s", "HF decode tok/s", "HF decode vs dense [95%]", "vLLM prefill tok/s",
                      "vLLM decode tok/s", "vLLM decode vs dense [95%]"]


def _throughput_cells(run: Run, figures: Figures, key: str, engine: str, settings: dict) -> list[str]:
    """Prefill and decode tokens/s of one engine, and the decode speed-up over dense; notes the engine's settings."""
    try:
        r = ev.rounds(run, key, engine)
    except NotMeasured:
        m = run.measurement(key, f"throughput_{engine}")
        return ["n/a" if m is not None else "-", "-", "-"]
    settings[engine] = {k: r[k] for k in ("batch_size", "input_len", "output_len", "rounds", "warmup", "resident", "dtype")
                        if k in r}
    ranks = (run.measurement(key, f"throughput_{engine}").settings.get("vllm") or {}).get("tensor_parallel_size")
    if ranks and ranks > 1:  # the weights split over ranks: the one setting that changes what a rate means
        settings[engine]["tensor_parallel_size"] = ranks
    speedup = "-"
    if key != DENSE:
        try:
            s = figures.speedup(key, DENSE, engine, DECODE)
            speedup = ("×" + s.interval.fmt(".3f") + coverage_of(s.interval)
                       + (" **implausible: noise**" if s.implausible else ""))
        except NotMeasured:
            pass
    return [_spread(r.get("prefill_tokens_per_s")), _spread(r.get(DECODE)), speedup]


def _flops(run: Run, key: str) -> dict | None:
    try:
        return ev.flops(run, key)
    except NotMeasured:
        return None
def _spread(d: dict | None) -> str:
    if not d or d.get("median") is None:
        return "-"
    if d.get("min") is None or d.get("max") is None:
        return f"{d['median']:.1f}"
    return f"{d['median']:.1f} ({d['min']:.1f}..{d['max']:.1f})"
