"""The markdown report of a fixed run fixture against a committed golden file, its plots, and
how it renders as GitHub-flavoured markdown.

Regenerate the golden file after an intended change of the report:
    LACO_UPDATE_GOLDEN=1 python -m pytest tests/test_report_render.py
and read the diff before committing it.
"""

import os
import re
from pathlib import Path

import pytest
from run_fixtures import FIXTURES, good_models, write_run

from laco.cli import main
from laco.report.judge import load_claims
from laco.report.render import render, table
from laco.report.runs import load_run

EXAMPLE = FIXTURES / "example-smollm2"
GOLDEN = Path(__file__).parent / "fixtures" / "reports" / "example-smollm2.md"


def test_report_matches_the_golden_file():
    text, _ = render(load_run(EXAMPLE), load_claims())
    if os.environ.get("LACO_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.is_file(), "no golden report: run with LACO_UPDATE_GOLDEN=1 once and commit it"
    assert text == GOLDEN.read_text(encoding="utf-8"), (
        "the report changed; if intended, regenerate with LACO_UPDATE_GOLDEN=1 and review the diff")


def test_report_states_what_the_fixture_holds():
    text, plots = render(load_run(EXAMPLE), load_claims())
    verdicts = dict(re.findall(r"^\| `([a-z-]+)` +\| laco +\|.*\| (PASS|\*\*FAIL\*\*|not measured)", text, re.M))
    assert verdicts["search-beats-rule-merge"] == "**FAIL**"  # rule-based merging wins in the fixture
    assert verdicts["laco-pruning-time-below-baselines"] == "not measured"  # slicegpt has no pruning time
    assert verdicts["laco-avg-retention"] == "PASS"
    assert "| laco       | 27.0%    | 45.0 ±3.5" in text  # per-benchmark score with lm-eval stderr
    assert "83.3%" in text  # LaCo's average as % of dense: 2.35 / 2.82
    assert "| drop       | perplexity      | drop: perplexity stale (older model)" in text
    assert "chid (OpenCompass-only)" in text
    assert [s["pointer"] for s in plots["traces"]["laco"]["steps"]] == [26, 24, 22, 21, 19, 18, 17]
    assert plots["retention"]["laco"]["boolq"] == pytest.approx(0.40 / 0.60)


def test_report_renders_as_github_tables():
    """Every table parses as a table with as many cells per row as headers: nothing breaks a row."""
    markdown_it = pytest.importorskip("markdown_it")
    text, _ = render(load_run(EXAMPLE), load_claims())
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    n_tables = len(re.findall(r"^\|[-|]+\|$", text.replace(" ", ""), re.M))
    assert html.count("<table>") == n_tables >= 9
    for block in re.findall(r"<table>.*?</table>", html, re.S):
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>.*?</tr>", block, re.S)}
        assert len(widths) == 1, block[:200]
    assert '<img src="example-smollm2/retention.png"' in html
    assert '<img src="example-smollm2/similarity.png"' in html


def test_pipes_in_values_cannot_break_a_table():
    assert table([["a|b", None]], ["x", "y"]).splitlines()[2] == "| a\\|b |     |"


def test_laco_report_writes_markdown_and_plots_atomically(tmp_path, capsys):
    run = write_run(tmp_path / "runs" / "r1", good_models())
    out = tmp_path / "reports"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["r1", "r1.md"]  # no temporary leftovers
    for png in ("retention.png", "similarity.png"):
        data = (out / "r1" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "](r1/similarity.png)" in (out / "r1.md").read_text()
    assert "report: " in capsys.readouterr().out
    assert main(["report", str(run), "--out", str(out)]) == 0  # re-rendering replaces both
    assert sorted(p.name for p in out.iterdir()) == ["r1", "r1.md"]


def test_report_of_a_paper_model_says_its_figures_are_not_entered(tmp_path):
    run = load_run(write_run(tmp_path / "r", good_models(), profile="llama2-7b"))
    text, _ = render(run, load_claims())
    assert "Paper figures for Llama2-7B: **not entered**" in text
    assert "(gated)" in text.split("## Models")[0]


def test_report_of_a_bad_run_is_a_clear_error(tmp_path):
    assert main(["report", str(tmp_path / "missing")]) == 2
