"""Claims -> verdicts: the one judge that the suites, the reports, `laco gate` and the tests use.

A claim (suites/claims.toml) names a kind of check, a metric, a comparison and a threshold.
It is judged per subject model of a run (every model whose method plays the claim's subject
role, e.g. every LaCo model) and, for comparisons, against every model of another role (e.g.
the width baselines). Each comparison is one `Row`; a `Verdict` gathers the rows of one
(claim, subject) pair and is what one suite test asserts.

Rules that keep a verdict honest:
- a value that is missing, n/a, or from an older model gives NOT MEASURED, never PASS;
- accuracy is compared over the benchmarks both models have, with lm-eval's stderr: a
  difference smaller than k * sqrt(se_a^2 + se_b^2) (k from the claims file, 2 by default) is
  marked "within noise" beside the verdict, which follows the point estimate;
- throughput is marked within noise when the spreads (min..max over repeats) overlap, or when
  the ratio lies within the claims file's throughput floor of the threshold: repeats inside one
  engine start miss the drift between starts, which the floor states as measured.
"""

from __future__ import annotations

import json
import math
import operator
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import laco
from laco import LacoError
from laco.report.runs import DENSE, Run

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

PASS, FAIL, NOT_MEASURED = "PASS", "FAIL", "not measured"
KINDS = ("retention", "versus", "loadable")
COMPARISONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


# --- claims as data ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    source: str
    paper_figure: str
    kind: str
    metric: str = ""
    comparison: str = ">="
    threshold: float = 1.0
    subject: str = "laco"  # a role
    against: str = DENSE  # a role, or "dense"
    ratio_match: str | None = None  # "at_most" | "same": the other model's pruning ratio vs the subject's
    ratio_tolerance: float = 0.01
    engine: str = ""  # loadable: "transformers" | "vllm"
    profiles: tuple[str, ...] = ("*",)
    gate: bool | tuple[str, ...] = False
    paper_value: str = ""  # a field of suites/paper_figures.toml shown beside ours

    def applies_to(self, profile: str) -> bool:
        return "*" in self.profiles or profile in self.profiles

    def gated_for(self, profile: str) -> bool:
        if isinstance(self.gate, bool):
            return self.gate and self.applies_to(profile)
        return profile in self.gate or "*" in self.gate


@dataclass
class Claims:
    claims: list[Claim]
    roles: dict[str, tuple[str, ...]]
    noise_k: float
    path: Path
    throughput_floors: dict = field(default_factory=dict)  # profile (or "*") -> relative tok/s drift
    paper: dict = field(default_factory=dict)  # suites/paper_figures.toml

    def throughput_floor(self, profile: str) -> float:
        return self.throughput_floors.get(profile, self.throughput_floors.get("*", 0.0))

    def get(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise LacoError(f"no claim {claim_id!r} in {self.path}")

    def methods(self, role: str) -> tuple[str, ...]:
        if role == DENSE:
            return (DENSE,)
        if role not in self.roles:
            raise LacoError(f"{self.path}: unknown role {role!r} (roles: {', '.join(self.roles)})")
        return self.roles[role]

    def paper_figure(self, profile: str, method: str, name: str):
        """A figure of the paper for this profile's model and method, or None when not entered."""
        return ((self.paper.get("models", {}).get(profile) or {}).get(method) or {}).get(name)


def suites_dir() -> Path:
    """suites/ of this checkout (beside the laco package), else of the working directory."""
    for candidate in (Path(laco.__file__).resolve().parents[1] / "suites", Path.cwd() / "suites"):
        if (candidate / "claims.toml").is_file():
            return candidate
    raise LacoError("suites/claims.toml not found beside the laco package nor in the working directory; "
                    "pass --claims PATH or set LACO_CLAIMS")


def read_toml(path: Path, what: str) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LacoError(f"{what} file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LacoError(f"{path}: {exc}") from None


def load_claims(path: str | Path | None = None) -> Claims:
    path = Path(path or os.environ.get("LACO_CLAIMS") or suites_dir() / "claims.toml")
    data = read_toml(path, "claims")
    claims = [_claim(d, path) for d in data.get("claim", [])]
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise LacoError(f"{path}: duplicate claim ids")
    figures = path.parent / data.get("paper_figures", "paper_figures.toml")
    paper = read_toml(figures, "paper figures") if figures.is_file() else {}
    roles = {k: tuple(v) for k, v in data.get("roles", {}).items()}
    noise = data.get("noise", {})
    floors = {str(k): float(v) for k, v in noise.get("throughput_floor", {}).items()}
    result = Claims(claims, roles, float(noise.get("k", 2.0)), path, paper=paper, throughput_floors=floors)
    for c in claims:  # unknown roles are a mistake in the file: say so now, not mid-report
        result.methods(c.subject), result.methods(c.against)
    return result


def _claim(d: dict, path: Path) -> Claim:
    known = set(Claim.__dataclass_fields__)
    unknown = set(d) - known
    if unknown:
        raise LacoError(f"{path}: claim {d.get('id', '?')!r} has unknown fields {sorted(unknown)}")
    if d.get("kind") not in KINDS:
        raise LacoError(f"{path}: claim {d.get('id', '?')!r}: kind must be one of {', '.join(KINDS)}")
    if d.get("comparison", ">=") not in COMPARISONS:
        raise LacoError(f"{path}: claim {d['id']!r}: comparison must be one of {', '.join(COMPARISONS)}")
    d = dict(d)
    d["profiles"] = tuple(d.get("profiles", ("*",)))
    if isinstance(d.get("gate"), list):
        d["gate"] = tuple(d["gate"])
    return Claim(**d)


# --- values from a run ----------------------------------------------------------------------------

class NotMeasured(Exception):
    """A value the run does not have; its message says why."""


@dataclass
class Value:
    value: float
    stderr: float | None = None
    low: float | None = None  # spread over repeats (throughput)
    high: float | None = None
    note: str = ""


def task_scores(run: Run, key: str) -> dict[str, tuple[float, float | None]]:
    """{task: (score, stderr)} in the metric each task declares (acc or acc_norm)."""
    m = run.ok(key, "accuracy")
    if m is None:
        raise NotMeasured(run.missing_reason(key, "accuracy"))
    scores = {}
    for task, d in m.values.get("tasks", {}).items():
        metric = d.get("metric") or "acc"
        if isinstance(d.get(metric), (int, float)):
            score, se = float(d[metric]), lm_eval_stderr(d)
            scores[task] = (score, se if se is not None else binomial_stderr(score, d.get("n")))
    return scores


def lm_eval_stderr(task_result: dict) -> float | None:
    """lm-eval's stderr of the task's declared metric; None where it wrote "N/A" or nothing."""
    se = task_result.get(f"{task_result.get('metric') or 'acc'}_stderr")
    return float(se) if isinstance(se, (int, float)) else None


def binomial_stderr(p: float, n: int | None) -> float | None:
    """The standard error of a mean of n 0/1 item scores, sqrt(p(1-p)/(n-1)) (lm-eval's own for
    acc). Used where lm-eval gives none: a group whose subtasks have one item each (MMLU at one
    item per subject) has no per-subtask stderr to pool, though its items are equally weighted."""
    if not isinstance(n, int) or n < 2 or not 0 <= p <= 1:
        return None
    return math.sqrt(p * (1 - p) / (n - 1))


def common_scores(run: Run, a: str, b: str):
    """Scores of a and b over the tasks both have: ({task: (s, se)}, {task: (s, se)})."""
    sa, sb = task_scores(run, a), task_scores(run, b)
    tasks = [t for t in sa if t in sb]
    if not tasks:
        raise NotMeasured(f"{a} and {b} share no accuracy task")
    return {t: sa[t] for t in tasks}, {t: sb[t] for t in tasks}


def average(scores: dict[str, tuple[float, float | None]]) -> Value:
    """Mean over tasks; its stderr from the tasks' (independent) stderrs, None if any is missing."""
    n = len(scores)
    ses = [se for _, se in scores.values()]
    se = math.sqrt(sum(s * s for s in ses)) / n if all(s is not None for s in ses) else None
    return Value(sum(s for s, _ in scores.values()) / n, se, note=f"{n} tasks")


def single(run: Run, key: str, metric: str) -> Value:
    """A value that needs no partner: perplexity.ppl, memory.<field>, pruning_time.seconds."""
    group, _, name = metric.partition(".")
    if group == "perplexity":
        m = run.ok(key, "perplexity")
        v = m and (m.values.get("windows") or {}).get(name)
    elif group in ("memory", "pruning_time"):
        m = run.ok(key, group)
        v = m and m.values.get(name)
    else:
        raise LacoError(f"unknown metric {metric!r}")
    if m is None:
        raise NotMeasured(run.missing_reason(key, group))
    if v is None:
        raise NotMeasured(f"{key}: {group} has no {name}")
    return Value(float(v))


def throughput_pair(run: Run, a: str, b: str, name: str) -> tuple[Value, Value, str]:
    """Tokens/s of a and b on the same engine: vLLM where both loaded in it, else HF."""
    for engine in ("vllm", "hf"):
        ma, mb = run.ok(a, f"throughput_{engine}"), run.ok(b, f"throughput_{engine}")
        if ma and mb:
            va, vb = (_spread(m.values.get(name)) for m in (ma, mb))
            if va and vb:
                return va, vb, engine
    reasons = [run.missing_reason(k, "throughput_hf") for k in (a, b) if not run.ok(k, "throughput_hf")]
    raise NotMeasured("; ".join(reasons) or f"no {name} on a common engine")


def _spread(d: dict | None) -> Value | None:
    if not d or d.get("median") is None:
        return None
    return Value(float(d["median"]), low=d.get("min"), high=d.get("max"))


def pair(run: Run, metric: str, a: str, b: str) -> tuple[Value, Value, str]:
    """Values of `metric` for models a and b, comparable with each other, and a note."""
    if metric == "accuracy.average":
        sa, sb = common_scores(run, a, b)
        return average(sa), average(sb), f"{len(sa)} tasks"
    if metric.startswith("throughput."):
        va, vb, engine = throughput_pair(run, a, b, metric.partition(".")[2])
        return va, vb, engine
    return single(run, a, metric), single(run, b, metric), ""


# --- verdicts ---------------------------------------------------------------------------------

@dataclass
class Row:
    """One comparison: subject vs `other` (a model, or a benchmark for per-task retention)."""
    status: str
    other: str | None
    ours: str
    note: str = ""
    value: float | None = None  # the number the check compared (a ratio, or the subject's value)
    within_noise: bool | None = None


@dataclass
class Verdict:
    claim: Claim
    subject: str
    rows: list[Row]
    gated: bool
    paper: str  # the paper's figure (statement or entered number) for this run's model

    @property
    def status(self) -> str:
        statuses = {r.status for r in self.rows}
        if not self.rows or FAIL in statuses:
            return FAIL if self.rows else NOT_MEASURED
        return NOT_MEASURED if NOT_MEASURED in statuses else PASS

    @property
    def ours(self) -> str:
        if self.claim.metric == "accuracy.each" and all(r.value is not None for r in self.rows):
            worst = min(self.rows, key=lambda r: r.value)
            return f"lowest {worst.ours} ({worst.other}) of {len(self.rows)}"
        if len(self.rows) == 1:
            return self.rows[0].ours
        return "; ".join(f"{r.other}: {r.ours}" for r in self.rows)

    @property
    def noise(self) -> str:
        flagged = [r.other or "" for r in self.rows if r.within_noise]
        if not flagged:
            return ""
        return "within noise" if len(self.rows) == 1 else "within noise: " + ", ".join(flagged)

    def table(self) -> list[list[str]]:
        return [[self.claim.id, self.subject, r.other or "", r.ours, r.status, r.note,
                 "within noise" if r.within_noise else ""] for r in self.rows]


def judge(run: Run, claim: Claim, subject: str, claims: Claims) -> Verdict:
    """The verdict of one claim for one subject model of a run."""
    if claim.kind == "retention":
        rows = _retention(run, claim, subject, claims.noise_k)
    elif claim.kind == "versus":
        others = [k for k in run.keys_of(claims.methods(claim.against)) if k != subject]
        if claim.against == DENSE:
            others = [DENSE]
        rows = [_versus(run, claim, subject, other, claims) for other in others]
        if not rows:
            names = ", ".join(claims.methods(claim.against))
            rows = [Row(NOT_MEASURED, None, "-", f"run has no {claim.against} model ({names})")]
    else:
        rows = [_loadable(run, claim, subject)]
    profile = run.profile_name
    return Verdict(claim, subject, rows, claim.gated_for(profile), _paper(claim, claims, profile, run, subject))


def subjects(run: Run, claim: Claim, claims: Claims) -> list[str]:
    return run.keys_of(claims.methods(claim.subject))


def judge_run(run: Run, claims: Claims) -> list[Verdict]:
    """Every claim that applies to the run's profile, for every subject model. A claim whose
    subject role has no model in the run gets one NOT MEASURED verdict."""
    verdicts = []
    for claim in claims.claims:
        if not claim.applies_to(run.profile_name):
            continue
        keys = subjects(run, claim, claims)
        if not keys:
            missing = Row(NOT_MEASURED, None, "-", f"run has no {claim.subject} model")
            verdicts.append(Verdict(claim, "-", [missing], claim.gated_for(run.profile_name), claim.paper_figure))
        verdicts.extend(judge(run, claim, k, claims) for k in keys)
    return verdicts


def _paper(claim: Claim, claims: Claims, profile: str, run: Run, subject: str) -> str:
    method = run.models[subject].method if subject in run.models else claim.subject
    figure = claims.paper_figure(profile, method, claim.paper_value) if claim.paper_value else None
    return f"{claim.paper_figure}; paper: {_num(figure)}" if figure is not None else claim.paper_figure


def _retention(run: Run, claim: Claim, subject: str, k: float) -> list[Row]:
    """subject / dense accuracy, on the average or on every benchmark."""
    try:
        ss, sd = common_scores(run, subject, DENSE)
    except NotMeasured as exc:
        return [Row(NOT_MEASURED, DENSE, "-", str(exc))]
    if claim.metric == "accuracy.average":
        items = {"average": (average(ss), average(sd))}
    elif claim.metric == "accuracy.each":
        items = {t: (Value(*ss[t]), Value(*sd[t])) for t in ss}
    else:
        raise LacoError(f"claim {claim.id}: retention needs metric accuracy.average or accuracy.each")
    rows = []
    for item, (s, d) in items.items():
        if d.value <= 0:
            rows.append(Row(NOT_MEASURED, item, "-", "dense score is 0"))
            continue
        ratio = s.value / d.value
        ok = COMPARISONS[claim.comparison](ratio, claim.threshold)
        noise = _accuracy_noise(s.value - claim.threshold * d.value, s.stderr, d.stderr, claim.threshold, k)
        rows.append(Row(PASS if ok else FAIL, item, f"{ratio:.1%}",
                        f"{_pct(s.value)} vs dense {_pct(d.value)}", ratio, noise))
    return rows


def _accuracy_noise(delta: float, se_a: float | None, se_b: float | None, scale: float, k: float) -> bool | None:
    if se_a is None or se_b is None:
        return None
    return abs(delta) < k * math.sqrt(se_a**2 + (scale * se_b) ** 2)


def _versus(run: Run, claim: Claim, subject: str, other: str, claims: Claims) -> Row:
    mismatch = _ratio_mismatch(run, claim, subject, other)
    if mismatch:
        return Row(NOT_MEASURED, other, "-", mismatch)
    try:
        s, o, note = pair(run, claim.metric, subject, other)
    except NotMeasured as exc:
        return Row(NOT_MEASURED, other, "-", str(exc))
    ok = COMPARISONS[claim.comparison](s.value, claim.threshold * o.value)
    if claim.metric.startswith("accuracy."):
        noise = _accuracy_noise(s.value - claim.threshold * o.value, s.stderr, o.stderr, claim.threshold, claims.noise_k)
    elif s.low is not None and o.low is not None and s.high is not None and o.high is not None:
        overlap = s.low <= claim.threshold * o.high and claim.threshold * o.low <= s.high
        drift = claims.throughput_floor(run.profile_name)
        noise = overlap or abs(s.value / (claim.threshold * o.value) - 1) <= drift
    else:
        noise = None
    ratio = s.value / o.value if o.value else math.nan
    engine = f", {note}" if claim.metric.startswith("throughput.") else ""  # which engine both ran on
    ours = f"{_fmt(claim.metric, s.value)} vs {_fmt(claim.metric, o.value)} (x{ratio:.2f}{engine})"
    return Row(PASS if ok else FAIL, other, ours, "", s.value, noise)


def _ratio_mismatch(run: Run, claim: Claim, subject: str, other: str) -> str:
    """Why the other model is not at a comparable pruning ratio ('' when it is, or no rule)."""
    if not claim.ratio_match or other == DENSE:
        return ""
    rs, ro = run.models[subject].pruning_ratio, run.models[other].pruning_ratio
    if rs is None or ro is None:
        return f"pruning ratio of {subject if rs is None else other} not recorded"
    tol = claim.ratio_tolerance
    if claim.ratio_match == "at_most" and ro > rs + tol:
        return f"not a matched ratio: {other} removed {ro:.1%} > {subject} {rs:.1%} (+{tol:.1%})"
    if claim.ratio_match == "same" and abs(ro - rs) > tol:
        return f"not the same ratio: {other} removed {ro:.1%}, {subject} {rs:.1%} (tolerance {tol:.1%})"
    return ""


def _loadable(run: Run, claim: Claim, subject: str) -> Row:
    record = run.models[subject].record
    declared = (record.get("loadable") or {}).get(claim.engine)
    reason = (record.get("loadable") or {}).get("reason", "")
    if claim.engine == "vllm":
        m = run.ok(subject, "throughput_vllm")
        if m is not None:
            return Row(PASS, "vllm", "served by vLLM", "throughput_vllm measured", 1.0)
        if declared is False:
            return Row(FAIL, "vllm", "not loadable", reason)
        return Row(NOT_MEASURED, "vllm", "-", run.missing_reason(subject, "throughput_vllm"))
    if claim.engine == "transformers":
        if not record:
            return Row(NOT_MEASURED, "transformers", "-", f"{subject}: no pruning record")
        loader = record.get("loader", "transformers")
        if declared is False or loader != "transformers":
            return Row(FAIL, "transformers", f"needs {loader}", reason)
        problem, where = _saved_config_problem(run.models[subject].saved, record, run.path)
        if problem:
            return Row(FAIL, "transformers", "config does not match", problem)
        if declared is None and not where:
            return Row(NOT_MEASURED, "transformers", "-", f"{subject}: record declares no loadability, no saved config")
        return Row(PASS, "transformers", "stock AutoModelForCausalLM", f"loader=transformers; {where or 'declared'}", 1.0)
    raise LacoError(f"claim {claim.id}: loadable needs engine transformers or vllm")


def _saved_config_problem(saved: str | None, record: dict, run_dir: Path) -> tuple[str, str]:
    """Check the saved config.json where the weights were kept: a stock loader rebuilds the model
    from it, so a layer count that disagrees with the pruning record would silently re-create
    deleted layers with random weights. Returns (problem or "", what was checked)."""
    candidates = [Path(saved) / "config.json", run_dir / saved / "config.json"] if saved else []
    config = next((c for c in candidates if c.is_file()), None)  # as recorded, or relative to the run
    if config is None:
        return "", ""
    try:
        layers = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    except json.JSONDecodeError:
        return f"{config}: not valid JSON", ""
    expected = record.get("n_layers_after")
    if expected is not None and layers != expected:
        return f"{config}: num_hidden_layers={layers} but the model has {expected} layers", ""
    return "", f"{config.name}: num_hidden_layers={layers}"


# --- formatting -------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)


def _fmt(metric: str, x: float) -> str:
    if metric.startswith("accuracy."):
        return _pct(x)
    if metric.startswith("pruning_time."):
        return f"{x:.2f} s"
    if metric.startswith("memory."):
        return f"{x:.1f} MB"
    if metric.startswith("throughput."):
        return f"{x:.1f} tok/s"
    return f"{x:.2f}"
