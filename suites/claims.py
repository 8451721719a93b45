"""Claims as data: the schema of claims.toml, the roles methods play, and the conditions of each claim.

A claim names what is compared (kind, metric), how (comparison, threshold), between which models
(subject role, `against` role or dense) and under which conditions the paper makes it: the band of
pruning ratios of the subject, and for comparisons the matched ratio of the other model (§3.3: "equal
or slightly smaller"). A model outside the conditions is shown with its ratio as "not at the claim's
conditions", never judged, never a pass. Profiles add release criteria of their own (`acceptance` in
a bench profile); they become claims here, against the dense model.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal, Union

from pydantic import Field, model_validator

from laco import LacoError
from laco.config import Strict, load
from suites.evidence import DENSE, Run

KINDS = ("retention", "above-chance", "versus", "loadable")
METRICS = ("accuracy.average", "accuracy.average_above_chance", "accuracy.each", "perplexity.ppl", "memory.param_mb",
           "memory.peak_mb", "throughput.output_tokens_per_s", "throughput.decode_tokens_per_s",
           "throughput.total_tokens_per_s", "pruning_time.seconds", "")
Metric = Literal["accuracy.average", "accuracy.average_above_chance", "accuracy.each", "perplexity.ppl",
                 "memory.param_mb", "memory.peak_mb", "throughput.output_tokens_per_s",
                 "throughput.decode_tokens_per_s", "throughput.total_tokens_per_s", "pruning_time.seconds", ""]


class Conditions(Strict):
    """Where the paper makes the claim. `ratio`: the band [low, high] of the subject's pruning ratio;
    `ratio_of_paper`: the paper's own ratio of this profile's model (Table 1) +- `ratio_tolerance`;
    `match`: how the other model's ratio must relate to the subject's."""

    ratio: list[float] | None = Field(default=None, min_length=2, max_length=2)
    ratio_of_paper: bool = False
    ratio_tolerance: float = Field(default=0.01, ge=0)
    match: Literal["equal-or-slightly-smaller", "same"] | None = None
    match_slack: float = Field(default=0.025, ge=0)  # how much smaller "slightly smaller" may be
    match_tolerance: float = Field(default=0.002, ge=0)  # rounding: how much larger still counts as equal


class PaperRef(Strict):
    """Where the paper's figure for this claim is: a table of paper_figures.toml and its column(s)."""

    table: int
    columns: list[str] = Field(min_length=1)


class Claim(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9:-]*$")
    statement: str
    source: str
    paper_figure: str  # the paper's figure or threshold in words
    kind: Literal["retention", "above-chance", "versus", "loadable"]
    metric: Metric = ""
    comparison: Literal[">", ">=", "<", "<="] = ">="
    threshold: float = 1.0
    subject: str = "laco"  # a role (or a method label)
    against: str = DENSE  # a role, or "dense"
    engine: Literal["transformers", "vllm", ""] = ""  # loadable only
    profiles: list[str] = Field(default_factory=lambda: ["*"])
    gate: Union[bool, list[str]] = False
    conditions: Conditions = Field(default_factory=Conditions)
    paper: PaperRef | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Claim:
        if self.kind == "loadable" and not self.engine:
            raise ValueError("a loadable claim names its engine (transformers or vllm)")
        if self.kind != "loadable" and not self.metric:
            raise ValueError(f"a {self.kind} claim names its metric")
        if self.kind in ("retention", "above-chance") and not self.metric.startswith("accuracy."):
            raise ValueError(f"a {self.kind} claim needs an accuracy metric")
        return self

    def applies_to(self, profile: str) -> bool:
        return "*" in self.profiles or profile in self.profiles

    def gated_for(self, profile: str) -> bool:
        if isinstance(self.gate, bool):
            return self.gate and self.applies_to(profile)
        return profile in self.gate or "*" in self.gate


class StatisticsSettings(Strict):
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    resamples: int = Field(default=4000, ge=2000)
    seed: int = 20240219


class ClaimsFile(Strict):
    paper_figures: str = "paper_figures.toml"
    statistics: StatisticsSettings = Field(default_factory=StatisticsSettings)
    roles: dict[str, list[str]]
    claim: list[Claim]

    @model_validator(mode="after")
    def _unique(self) -> ClaimsFile:
        ids = [c.id for c in self.claim]
        doubled = sorted({i for i in ids if ids.count(i) > 1})
        if doubled:
            raise ValueError(f"claim ids used twice: {', '.join(doubled)}")
        for c in self.claim:
            for role in (c.subject, c.against):
                if role != DENSE and role not in self.roles:
                    raise ValueError(f"claim {c.id}: unknown role {role!r} (roles: {', '.join(self.roles)})")
        return self


class Claims:
    """The claims file with its roles and the paper's figures; profile acceptance criteria are added
    per run (`for_run`)."""

    def __init__(self, data: ClaimsFile, path: Path, paper):
        self.data, self.path, self.paper = data, path, paper
        self.claims: list[Claim] = list(data.claim)
        self.roles = {k: tuple(v) for k, v in data.roles.items()}

    @property
    def statistics(self) -> StatisticsSettings:
        return self.data.statistics

    def get(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise LacoError(f"no claim {claim_id!r} in {self.path}")

    def methods(self, role: str) -> tuple[str, ...]:
        """Method names (or labels) playing a role; a name that is not a role stands for itself."""
        if role == DENSE:
            return (DENSE,)
        return self.roles.get(role, (role,))

    def for_run(self, run: Run) -> list[Claim]:
        """The claims that apply to the run's profile, then the profile's own acceptance criteria."""
        own = [c for c in self.claims if c.applies_to(run.profile_name)]
        return own + acceptance_claims(run)


def acceptance_claims(run: Run) -> list[Claim]:
    """A profile's release criteria (bench profile `acceptance`) as claims against the dense model."""
    out = []
    for a in run.profile.get("acceptance") or []:
        out.append(Claim(
            id=f"profile:{a['id']}", statement=a["statement"], source=f"profile {run.profile_name} (acceptance)",
            paper_figure=f"{a['metric']} {a['comparison']} {a['threshold']:g} x dense", kind="versus",
            metric=a["metric"], comparison=a["comparison"], threshold=a["threshold"], subject=a["subject"],
            against=DENSE, profiles=[run.profile_name], gate=bool(a.get("gate", True))))
    return out


def suites_data(name: str) -> Path:
    """A data file shipped with the suites package (claims.toml, paper_figures.toml, tolerances.toml)."""
    return Path(str(resources.files("suites").joinpath(name)))


def load_claims(path: str | Path | None = None) -> Claims:
    """claims.toml (the package's, $LACO_CLAIMS, or `path`) with the paper figures it names."""
    from suites.paper import load_paper

    path = Path(path or os.environ.get("LACO_CLAIMS") or suites_data("claims.toml"))
    data = load(path, ClaimsFile, "claims")
    figures = path.parent / data.paper_figures
    if not figures.is_file():
        figures = suites_data(data.paper_figures)
    return Claims(data, path, load_paper(figures))
