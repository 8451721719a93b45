"""Claims as data: the schema of the claims files, the roles methods play, and the conditions of each claim.

`suites/claims/` holds one file per paper (`laco.toml`: the LaCo paper's claims; `come.toml`: CoMe's),
each with its paper's citation, its roles and its claims. A claim names what is compared (kind, metric),
how (comparison, threshold), between which models (subject role, `against` role or dense), under which
conditions the paper makes it (the band of pruning ratios of the subject, and for comparisons the
matched ratio of the other model, LaCo §3.3: "equal or slightly smaller"), and for a comparison the
margin within which two figures count as equal. A model outside the conditions is shown with its ratio
as "not at the claim's conditions", never judged, never a pass. A run judges every claims file whose
subject methods it measured. A claim names the `stage` of its models (pruned, post-trained, re-pruned) and
may compare its subject with its own relative (`against`: the same model before post-training, its
random-init control, the model it was re-pruned from); claims about post-training are judged only on
runs that post-trained a model. Profiles add release criteria of their own (`acceptance` in a bench
profile); they become claims here, against the dense model.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal, Union, get_args

from pydantic import Field, model_validator

from laco import LacoError
from laco.config import Strict, load
from suites.evidence import DENSE, Model, Run
from suites.stages import RELATIONS

# The models a claim is about, by what the bench did to them (evidence.Model.stage): "pruned" (the
# default) takes the pruned and re-pruned models, never one the bench trained after pruning; the others
# take only their own stage. A run judges a claim of another stage only when it post-trained a model.
STAGES = {"pruned": ("pruned", "re-pruned"), "post-trained": ("post-trained",), "re-pruned": ("re-pruned",)}
RELATION_STAGE = {"before-post-training": "post-trained", "random-init-control": "post-trained",
                  "re-pruned-from": "re-pruned"}  # the stage of the subject each relation is defined for

KINDS = ("retention", "above-chance", "versus", "loadable")
# accuracy.average: the LaCo paper's Per., the mean over benchmarks of pruned / dense; accuracy.average_ratio:
# the average score over dense's (CoMe's "retains 83% of its average accuracy"); accuracy.average_above_chance:
# (avg - chance) / (dense avg - chance); accuracy.each: per benchmark
Metric = Literal["accuracy.average", "accuracy.average_ratio", "accuracy.average_above_chance", "accuracy.each",
                 "perplexity.ppl", "memory.param_mb", "memory.peak_mb", "throughput.output_tokens_per_s",
                 "throughput.decode_tokens_per_s", "throughput.total_tokens_per_s", "pruning_time.seconds",
                 "post_training.loss", ""]
METRICS = get_args(Metric)


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
    # the threshold is the paper's own figure of the statistic for the paper's model matching the run
    threshold_of_paper: bool = False
    # versus only: the margin within which the two figures count as equal (accuracy: points as a fraction,
    # 0.005 = 0.5 pt; ratios: relative, the ratio within threshold / (1 + margin) .. threshold x (1 + margin))
    margin: float | None = Field(default=None, gt=0, lt=1)
    subject: str = "laco"  # a role (or a method label)
    # a role, "dense", or the subject's own relative (stages.RELATIONS): "before-post-training" (the same
    # pruning without the training), "random-init-control" (the same training from random weights of the
    # same shape), "re-pruned-from" (the model a re-pruned model was pruned from)
    against: str = DENSE
    stage: Literal["pruned", "post-trained", "re-pruned"] = "pruned"  # of the subject and the against role's models
    recipe: str | None = None  # post-trained subjects of this recipe only (laco.recipes)
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
        if self.margin is not None and self.kind != "versus":
            raise ValueError(f"claim {self.id}: only a versus claim compares two figures and takes a margin")
        if self.threshold_of_paper and self.metric != "accuracy.average_above_chance":
            raise ValueError(f"claim {self.id}: threshold_of_paper is the paper's above-chance retention only")
        if self.against in RELATION_STAGE and self.stage != RELATION_STAGE[self.against]:
            raise ValueError(f"claim {self.id}: against = {self.against!r} needs stage = {RELATION_STAGE[self.against]!r}")
        if self.metric.startswith("post_training.") and self.against != "random-init-control":
            raise ValueError(f"claim {self.id}: a training loss compares like with like: against = 'random-init-control'")
        if self.recipe is not None and self.stage != "post-trained":
            raise ValueError(f"claim {self.id}: recipe names post-trained subjects: stage = 'post-trained'")
        return self

    def takes(self, model: Model, subject: bool = True) -> bool:
        """Whether a model of the run is of the claim's stage (and, as its subject, of its recipe)."""
        if model.key == DENSE:
            return True
        if model.stage not in STAGES[self.stage]:
            return False
        return not subject or self.recipe is None or model.post_training.get("recipe") == self.recipe

    def applies_to(self, profile: str) -> bool:
        return "*" in self.profiles or profile in self.profiles

    def gated_for(self, profile: str) -> bool:
        if isinstance(self.gate, bool):
            return self.gate and self.applies_to(profile)
        return profile in self.gate or "*" in self.gate

    def equal_band(self) -> tuple[float, float] | None:
        """The interval of the statistic within which the two figures count as equal (None: no margin)."""
        if self.margin is None:
            return None
        if self.metric.startswith("accuracy."):  # the statistic: subject - threshold x other, 0 at a tie
            return -self.margin, self.margin
        return self.threshold / (1 + self.margin), self.threshold * (1 + self.margin)


class StatisticsSettings(Strict):
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    resamples: int = Field(default=4000, ge=2000)
    seed: int = 20240219


class PaperInfo(Strict):
    """The paper whose claims a file holds."""

    name: str  # its method's name, e.g. "LaCo"
    citation: str
    year: int


class ClaimsFile(Strict):
    paper: PaperInfo
    paper_figures: str | None = None  # the paper's tables (schema: suites/paper.py), where the project has them
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
                if role != DENSE and role not in self.roles and not (role == c.against and role in RELATIONS):
                    raise ValueError(f"claim {c.id}: unknown role {role!r} (roles: {', '.join(self.roles)})")
            if c.paper is not None and self.paper_figures is None:
                raise ValueError(f"claim {c.id} cites a table, but the file names no paper_figures")
        return self


class Claims:
    """The claims files of every paper, with their roles and the paper's figures; profile acceptance
    criteria are added per run (`for_run`)."""

    def __init__(self, files: dict[Path, ClaimsFile], path: Path, paper):
        self.files, self.path, self.paper = files, path, paper
        self.claims: list[Claim] = [c for data in files.values() for c in data.claim]
        self._paper_of = {c.id: data.paper for data in files.values() for c in data.claim}
        self.roles: dict[str, tuple[str, ...]] = {}
        for file, data in files.items():
            for role, methods in data.roles.items():
                if self.roles.setdefault(role, tuple(methods)) != tuple(methods):
                    raise LacoError(f"{file}: role {role!r} is {methods}, another claims file makes it {list(self.roles[role])}")
        doubled = sorted({c.id for c in self.claims if sum(d.id == c.id for d in self.claims) > 1})
        if doubled:
            raise LacoError(f"{path}: claim ids used in two files: {', '.join(doubled)}")
        settings = [d.statistics for d in files.values()]
        if any(s != settings[0] for s in settings):
            raise LacoError(f"{path}: the claims files disagree on [statistics]")

    @property
    def statistics(self) -> StatisticsSettings:
        return next(iter(self.files.values())).statistics

    def get(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise LacoError(f"no claim {claim_id!r} in {self.path}")

    def paper_of(self, claim: Claim) -> PaperInfo | None:
        """The paper that makes the claim (None for a profile's acceptance criterion)."""
        return self._paper_of.get(claim.id)

    def methods(self, role: str) -> tuple[str, ...]:
        """Method names (or labels) playing a role; a name that is not a role stands for itself."""
        if role == DENSE:
            return (DENSE,)
        return self.roles.get(role, (role,))

    def measured(self, run: Run, claim: Claim) -> bool:
        """Whether the run measured a subject method of the claim's file (then the whole file is judged);
        a claim about post-training also needs a post-trained model in the run."""
        data = next((d for d in self.files.values() if claim in d.claim), None)
        if claim.stage != "pruned" and not run.post_trained:
            return False
        return data is None or any(run.keys_of(self.methods(c.subject)) for c in data.claim if c.stage == "pruned")

    def for_run(self, run: Run) -> list[Claim]:
        """The claims of every file the run measured that apply to its profile, then the profile's own
        acceptance criteria."""
        own = [c for c in self.claims if c.applies_to(run.profile_name) and self.measured(run, c)]
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
    """A data file or folder shipped with the suites package (claims/, paper_figures.toml, tolerances.toml)."""
    return Path(str(resources.files("suites").joinpath(name)))


def load_claims(path: str | Path | None = None) -> Claims:
    """The claims files (every *.toml of the folder `path`, $LACO_CLAIMS or the package's claims/, or the
    one file `path`), oldest paper first, with the paper figures they name."""
    from suites.paper import load_paper

    path = Path(path or os.environ.get("LACO_CLAIMS") or suites_data("claims"))
    if path.is_dir():
        found = sorted(path.glob("*.toml"))
        if not found:
            raise LacoError(f"{path}: no claims file (*.toml) in this folder")
    else:
        found = [path]
    files = {p: load(p, ClaimsFile, "claims") for p in found}
    files = dict(sorted(files.items(), key=lambda kv: (kv[1].paper.year, kv[0].name)))
    named = {(p.parent / d.paper_figures).resolve() for p, d in files.items() if d.paper_figures}
    if len({f.name for f in named}) > 1:
        raise LacoError(f"{path}: the claims files name different paper figures: {', '.join(sorted(f.name for f in named))}")
    figures = next(iter(named), None)
    if figures is None or not figures.is_file():
        figures = suites_data(figures.name if figures else "paper_figures.toml")
    return Claims(files, path, load_paper(figures))
