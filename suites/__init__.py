"""suites: the judging layer of laco-bench.

Claims and the paper's figures as data (claims.toml, paper_figures.toml, tolerances.toml), the
evidence read from a run (per-item outcomes, perplexity windows, throughput rounds), paired
statistics, verdicts (PASS / FAIL / INCONCLUSIVE, not measured, not at the claim's conditions),
the markdown report, `laco compare` and `laco gate`, and one thin pytest file per claim
(`pytest suites --run runs/ID`). It reads runs; it never measures.
"""
