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
from suites.claims import load_claims
from suites.evidence import load_run
from suites.markdown import table
from suites.report import render

EXAMPLE = FIXTURES / "example-smollm2"
GOLDEN = Path(__file__).parent / "fixtures" / "reports" / "example-smollm2.md"


@pytest.fixture(scope="module")
def example():
    return render(load_run(EXAMPLE), load_claims())


def test_report_matches_the_golden_file(example):
    text, _ = example
    if os.environ.get("LACO_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.is_file(), "no golden report: run with LACO_UPDATE_GOLDEN=1 once and commit it"
    assert text == GOLDEN.read_text(encoding="utf-8"), (
        "the report changed; if intended, regenerate with LACO_UPDATE_GOLDEN=1 and review the diff")


def verdict_of(text: str, claim: str, model: str) -> str:
    row = re.search(rf"^\| `{re.escape(claim)}` +\| {re.escape(model)} +\|(.*)$", text, re.M)
    assert row, (claim, model)
    cells = [c.strip() for c in row.group(1).split("|")]
    return cells[-3]


def test_report_states_what_the_fixture_holds(example):
    text, plots = example
    assert verdict_of(text, "laco-avg-retention", "laco") == "PASS"
    assert verdict_of(text, "laco-avg-retention", "laco-paper") == "not at the claim's conditions"
    assert verdict_of(text, "search-beats-rule-merge", "laco") == "*INCONCLUSIVE*"  # rule-merge ahead, not decisively
    assert verdict_of(text, "laco-pruning-time-below-baselines", "laco") == "not measured"  # slicegpt has no timing
    assert verdict_of(text, "profile:laco-ppl-within-3x-dense", "laco-paper") == "**FAIL** (gated)"
    assert "At the paper's conditions (25%–30% of parameters removed, Table 1 / abstract): **laco**" in text
    assert re.search(r"\| laco-paper = rule-paper \(same weights\): accuracy +\| ok +\| identical answers", text)
    assert re.search(r"\| drop +\| perplexity +\| drop: perplexity stale \(older model\)", text)
    assert "LaCo 80.28 (Table 2 Per., Llama2-7B (another model))" in text
    assert [s["pointer"] for s in plots["traces"]["laco"]["steps"]] == [26, 24, 22, 21, 19, 18, 17]
    assert plots["retention"]["laco"]["boolq"] == pytest.approx(0.47 / 0.62)


def test_report_renders_as_github_tables(example):
    """Every table parses as a table with as many cells per row as headers: nothing breaks a row."""
    markdown_it = pytest.importorskip("markdown_it")
    text, _ = example
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    n_tables = len(re.findall(r"^\|[-|]+\|$", text.replace(" ", ""), re.M))
    assert html.count("<table>") == n_tables >= 12
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


def test_report_of_a_paper_model_shows_its_own_dense_row(tmp_path):
    run = load_run(write_run(tmp_path / "r", good_models(), profile="llama2-7b"))
    text, _ = render(run, load_claims())
    dense = text.split("## Dense reproduction")[1].split("##")[0]
    assert re.search(r"\| hellaswag +\| acc_norm n=200 +\| 43.0 +\| 25.0 +\| HeSw +\| 71.35 +\| 74.00 ", dense)
    assert "another model" not in dense
    assert "(gated)" in text.split("## Checks")[0]


def test_report_of_a_bad_run_is_a_clear_error(tmp_path):
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_ablation_tables_stand_beside_the_papers_appendix_b(tmp_path):
    """Each ablation model in its paper table, against the reference with a paired interval, and the
    paper's BoolQ / PIQA / HeSw of the same row beside it."""
    models = {k: v for k, v in good_models().items() if k in ("dense", "laco", "drop")}
    models["laco"]["paper"] = {"table": 10, "setting": "Table 1"}
    models["drop"]["paper"] = {"table": 15, "method": "drop"}
    models["laco-c2"] = dict(models["laco"], paper={"table": 10, "setting": "C=2"},
                             accuracy={t: s - 0.02 for t, s in models["laco"]["accuracy"].items()})
    text, _ = render(load_run(write_run(tmp_path / "r", models)), load_claims())
    section = text.split("## Ablations (the paper's Appendix B)")[1].split("\n## ")[0]
    table10 = section.split("### Table 10")[1].split("###")[0]
    assert re.search(r"\| reference \(the paper's Table 1 row\) +\| laco +\|.*\| 64.07 / 69.8 / 55.69 ", table10)
    c2 = next(line for line in table10.splitlines() if "| laco-c2" in line)
    assert "-2.0 [" in c2 and "63.12 / 68.93 / 54.98" in c2  # 2 points below the reference on every task
    table15 = section.split("### Table 15")[1]
    assert re.search(r"\| drop +\| drop +\|.*52.57 / 68.17 / 48.61", table15)
    assert "## Retention against the pruning ratio" not in text  # ablation models are no ratio sweep


def test_a_resumed_run_states_its_segments_apart_from_the_pause(tmp_path):
    import json
    run = write_run(tmp_path / "r", good_models())
    meta = json.loads((run / "run.json").read_text())
    meta.update(started="2025-01-01T00:00:00+00:00", resumed=["2025-01-01T02:00:00+00:00"],
                finished="2025-01-01T02:10:00+00:00")
    (run / "run.json").write_text(json.dumps(meta))
    result = run / "results" / "dense" / "perplexity.json"
    doc = json.loads(result.read_text())
    doc["provenance"]["seconds"] = 600.0  # the first segment's last result ends at 00:10
    result.write_text(json.dumps(doc))
    text, _ = render(load_run(run), load_claims())
    assert re.search(r"\| wall time +\| 130\.0 min", text)  # the pause is inside the wall time
    assert ("once; segment 1 from 00:00:00: 10.0 min; segment 2 from 02:00:00: 10.0 min; 20.0 min in all"
            in text)
