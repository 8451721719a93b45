"""suites: the judging layer of laco-bench.

Claims and the paper's figures as data (claims/<paper>.toml, paper_figures.toml, tolerances.toml), the
evidence read from a run (per-item outcomes, perplexity windows, throughput rounds), paired
statistics, the run's figures computed once from them, verdicts (PASS / FAIL / INCONCLUSIVE, not
measured, not at the claim's conditions), the markdown report, `laco compare` and `laco gate`, and one
claim test parametrised from the claims file (`pytest suites --run runs/ID`). It reads runs; it
never measures.

    claims.py      the claims files' schema (one per paper), roles, conditions, margins; a profile's acceptance criteria
    paper.py       the paper's figures (paper_figures.toml) and their citations
    evidence.py    a run directory: its layout, models, results and the evidence they keep
    statistics.py  paired intervals (bootstrap over items, t over windows, rounds and repeats), p-values,
                   Holm's step-down, the items that would decide a claim
    figures.py     a run's figures, each computed once: retention, margins, paired differences and
                   ratios, speed-up plausibility
    outcomes.py    the statuses (equal within margin among them), decide(), Holm over a claim's rows, Row, Verdict
    verdicts.py    the judge: one function per claim kind (KINDS) and per compared metric (ROWS)
    checks.py      what must hold whatever the model (same items, identical weights alike, dense above chance)
    markdown.py    pipe tables, verdict marks, number formatting
    report/        the markdown report and its plots (a formatter: a first screen, the detail collapsed)
    compare.py     `laco compare`: run B against run A, paired, with tolerances
    gate.py        `laco gate`: the release gate (not measured: by the profile's design, or failed)
    history.py     `laco history`: each gated figure across runs, the regressions `laco compare` found marked
    commands.py    the command lines of report, compare, gate and history
    plots.py       the report's and the history's PNG plots
    conftest.py, test_claims.py   the claims as one parametrised pytest test
"""
