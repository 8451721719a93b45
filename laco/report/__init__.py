"""Reading bench runs and judging them: claims -> verdicts -> reports, compare and gate.

`runs` reads a run directory (the one place that knows its layout), `judge` turns the claims of
suites/claims.toml into verdicts, `render` and `plots` write the markdown report, `compare`
diffs two runs, `commands` holds `laco report`, `laco compare` and `laco gate`.
"""
