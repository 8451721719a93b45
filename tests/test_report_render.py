"""The markdown report of a fixed run fixture against a committed golden file, its plots, how it
renders as GitHub-flavoured markdown, and what a reader meets first.

Regenerate the golden file after an intended change of the report:
    LACO_UPDATE_GOLDEN=1 python -m pytest tests/test_report_render.py
and read the diff before committing it.
"""

import json
import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from run_fixtures import FIXTURES, LACO_STEPS, good_models, laco_record, model_record, write_run

from laco.cli import main
from suites.claims import load_claims
from suites.evidence import load_run
from suites.markdown import compact_table, table
from suites.report import render
from suites.report.models import target_text
from suites.outcomes import Verdict
from suites.verdicts import Judge

ROOT = Path(__file__).resolve().parents[1]
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


def first_screen(text: str) -> str:
    return text.split("<details>")[0]


def verdict_of(text: str, claim: str, model: str) -> str:
    """The verdict cell of the first screen's claims table (claim, model, paper, ours, verdict)."""
    row = re.search(rf"^\| `{re.escape(claim)}` +\| {re.escape(model)} +\|(.*)$", first_screen(text), re.M)
    assert row, (claim, model)
    cells = [c.strip() for c in row.group(1).split("|")]
    return cells[-2]


def test_report_states_what_the_fixture_holds(example):
    text, plots = example
    assert verdict_of(text, "laco-avg-retention", "laco") == "PASS"
    assert verdict_of(text, "search-beats-rule-merge", "laco") == "*INCONCLUSIVE*"  # rule-merge ahead, not decisively
    assert verdict_of(text, "laco-pruning-time-below-baselines", "laco") == "failed to measure"  # slicegpt: no timing
    assert verdict_of(text, "profile:laco-ppl-within-3x-dense", "laco-paper") == "**FAIL** (gated)"
    assert not re.search(r"^\| `laco-avg-retention` +\| laco-paper ", first_screen(text), re.M)  # outside its band
    assert "13 verdicts not at the claim's conditions (laco-paper 7.9%)" in first_screen(text)
    assert re.search(r"^- laco-paper: the model removed 7\.9%; the paper makes this claim at 25%–30% \(13 verdicts\)$",
                     text, re.M)
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
    """Each ablation model in one line, against the reference with a paired interval, and the paper's
    BoolQ / PIQA / HeSw of the same row beside it."""
    models = {k: v for k, v in good_models().items() if k in ("dense", "laco", "drop")}
    models["laco"]["paper"] = {"table": 10, "setting": "Table 1"}
    models["drop"]["paper"] = {"table": 15, "method": "drop"}
    models["laco-c2"] = dict(models["laco"], method="laco", paper={"table": 10, "setting": "C=2"}, weights="w-c2",
                             accuracy={t: s - 0.02 for t, s in models["laco"]["accuracy"].items()})
    text, _ = render(load_run(write_run(tmp_path / "r", models)), load_claims())
    section = text.split("## Ablations (the paper's Appendix B)")[1].split("\n## ")[0]
    assert "reference: **laco** (the paper's Table 1 row of every table)" in section
    assert "the paper's row: 64.07 / 69.8 / 55.69" in section
    c2 = next(line for line in section.splitlines() if "| laco-c2" in line)
    assert c2.startswith("| Table 10 ") and "-2.0 [" in c2 and "63.12 / 68.93 / 54.98" in c2  # 2 points below on every task
    drop = next(line for line in section.splitlines() if "| drop " in line)
    assert drop.startswith("| Table 15 ") and "52.57 / 68.17 / 48.61" in drop
    assert "## Retention against the pruning ratio" not in text  # ablation models are no ratio sweep
    first = first_screen(text)  # the variant judged on the same claims, in one line
    assert re.search(r"^- \*\*laco-c2\*\* \(C=2, 27\.0%\): PASS `laco-avg-retention`", first, re.M)
    assert not re.search(r"^\| `[a-z-]+` +\| laco-c2 ", first, re.M)


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


# --- what a reader meets first -----------------------------------------------------------------------

def test_the_first_screen_holds_every_claim_judged_at_its_conditions_in_60_lines(example):
    """Up to the first collapsed block: the run, one table of every claim at its conditions, the findings."""
    text, _ = example
    first = first_screen(text)
    assert len(first.splitlines()) <= 60
    judge = Judge(load_run(EXAMPLE), load_claims())
    # laco-beats-depth-baselines is not measured by the profile's design (no depth baseline ran): counted, not listed
    judged = [v for v in judge.all() if v.status != "not at the claim's conditions" and "depth" not in v.claim.id]
    assert len(judged) == 20
    for v in judged:
        assert re.search(rf"^\| `{re.escape(v.claim.id)}` +\| {re.escape(v.subject)} +\|", first, re.M), v.claim.id
    assert first.index("## Claims at the paper's conditions") < first.index("## Findings")
    for line in ("Profile **smollm2-135m**", "float32 on cpu", "Commit `000000000000`", "wall time 20.0 min",
                 "machine probe: fp32 60 GFLOP/s, bf16 12 GFLOP/s, memory 9.0 GB/s"):
        assert line in first


def test_findings_are_written_from_the_figures(example):
    """The fixture's numbers (scores 49.6 vs dense 58.2, PPL 31.5 vs 18.2 and 44.0 for llm-pruner) give the
    findings' numbers; the FAIL and the estimate against the paper are named."""
    text, _ = example
    findings = first_screen(text).split("## Findings")[1]
    assert f"its perplexity is ×{31.5 / 18.2:.3g} dense's" in findings
    assert f"×{31.5 / 44.0:.3g} llm-pruner's" in findings
    assert "**FAIL**: `profile:laco-ppl-within-3x-dense` for laco-paper (gated)" in findings
    assert "`search-beats-rule-merge` for laco: rule-merge: 49.6 vs 52.2" in findings  # rule ahead, undecided


def test_labels_say_what_the_paper_printed_and_what_the_run_read(example):
    text, _ = example
    assert "LaCo 9894 vs Dense 13410 (Table 20 memory_mb" in text  # Table 20 prints its dense row as "Dense"
    # only Table 1 has a Dense* (the authors' reproduction) row: its section, and the above-chance companion's
    # threshold, which is computed from Table 1
    table1 = re.compile(r"\(Table 1 under the same formula[^|]*")
    assert "Dense*" not in table1.sub("", first_screen(text))
    starred = [section.splitlines()[0] for section in text.split("\n## ") if "Dense*" in table1.sub("", section)]
    assert starred == ["Dense reproduction"]
    assert "read 1 of wikitext-2's 62 test documents (`lm_eval_limit`)" in text
    assert "its ordering of methods can differ from the windowed one" in text


def test_the_word_perplexity_says_where_it_orders_models_the_other_way(tmp_path):
    run = write_run(tmp_path / "r", good_models())
    result = run / "results" / "rule-merge" / "perplexity.json"
    doc = json.loads(result.read_text())
    doc["values"]["lm_eval_wikitext"]["word_perplexity"] = 70.0  # below llm-pruner's 74.8; in windows 48 above 44
    result.write_text(json.dumps(doc))
    text, _ = render(load_run(run), load_claims())
    assert "In this run it orders llm-pruner and rule-merge the other way round from the windows." in text


@pytest.mark.parametrize("record, expected", [
    ({"target": {"ratio": 0.27}, "parameters": {"pruning_ratio": 0.271}}, "27.0%"),
    # 30 layers of 3.54M over 134.5M: 11 layers reach 29.0%, 10 layers (26.3%) lay nearer 27%
    ({"target": {"ratio": 0.27}, "n_layers_before": 30, "n_layers_after": 19,
      "parameters": {"before": 134.5e6, "after": 134.5e6 - 11 * 3.54e6, "pruning_ratio": 11 * 3.54 / 134.5}},
     "27.0% (reached +2.0 pt; 10 layers, 26.3%, lay nearer)"),
    ({"target": {"ratio": 0.27}, "n_layers_before": 30, "n_layers_after": 20,
      "parameters": {"before": 134.5e6, "after": 134.5e6 - 10 * 3.54e6, "pruning_ratio": 10 * 3.54 / 134.5}},
     "27.0% (reached -0.7 pt; the nearest layer count)"),
    ({"target": {"ratio": 0.27}, "parameters": {"pruning_ratio": 0.30}}, "27.0% (reached +3.0 pt)"),  # width: no layers
])
def test_a_target_missed_says_whether_a_nearer_layer_count_existed(record, expected):
    assert target_text(record) == expected


def test_a_model_off_its_ratio_point_is_flagged(tmp_path):
    models = good_models()
    models["drop"]["record"] = model_record("drop", 0.33, 3.0)  # its point's others removed 26-27%
    text, _ = render(load_run(write_run(tmp_path / "r", models)), load_claims())
    flag = re.search(r"⚠ drop removed 33\.0%, the other models of point 27% 26\.\d% \(more than 2\.5% apart\)", text)
    assert flag and flag.start() < len(first_screen(text))
    assert re.search(r"^\| drop +\| drop +\| 27% +\|.*\| 33\.0% ⚠ off its point +\|", text, re.M)
    assert "⚠ laco " not in text  # its siblings are not flagged


def test_what_the_profile_does_not_measure_is_one_line_not_a_table(tmp_path):
    """A profile measuring accuracy and perplexity only: no all-dash tables, no row per skipped result."""
    models = good_models()
    for spec in models.values():
        spec.pop("vllm", None)
        spec["omit"] = ["memory", "flops", "throughput_hf", "pruning_time"]
    run = load_run(write_run(tmp_path / "r", models, settings={"measurements": ["perplexity", "accuracy"]}))
    text, _ = render(run, load_claims())
    design = "Not measured by the profile's design (it measures perplexity, accuracy)."
    for section in ("## Pruning time", "## Compute, memory and throughput"):
        assert text.split(section)[1].split("\n## ")[0].strip() == design
    missing = text.split("## Not measured")[1]
    assert "- memory: every model" in missing and "- pruning_time: every model" in missing
    assert "| laco " not in missing  # nothing failed
    assert "not measured by the profile's design" in first_screen(text)
    assert "failed to measure" not in first_screen(text)


def test_a_model_left_out_of_the_profiles_vllm_models_is_skipped_by_design_not_failed(tmp_path):
    """The bench records an n/a for a model the profile's `vllm.models` leaves out; the report lists it as
    skipped by the profile's design, while a model of vllm.models whose vLLM run failed stays a failure."""
    models = good_models()
    models["drop"]["vllm"] = "not timed on vLLM: not among this profile's vllm.models"
    models["llm-pruner"]["vllm"] = "engine failed to start"
    chosen = [k for k in models if k != "drop"]
    text, _ = render(load_run(write_run(tmp_path / "r", models, settings={"vllm": {"models": chosen}})), load_claims())
    missing = text.split("## Not measured")[1]
    assert "- throughput_vllm: drop" in missing
    failed = missing.split("Failed to measure")[1]
    assert "| llm-pruner " in failed and "engine failed to start" in failed and "| drop " not in failed


def test_a_run_stopped_before_its_last_models_says_so_first_and_lists_them(tmp_path):
    """A killed run: the first lines say it did not finish and which of the profile's models it never
    reached, and the missing section lists them instead of 'every measurement finished'."""
    models = good_models()
    path = write_run(tmp_path / "r", models, finished=False)
    (path / "models" / "slicegpt.json").unlink()
    shutil.rmtree(path / "results" / "slicegpt")
    text, _ = render(load_run(path), load_claims())
    pruned = len(models) - 1  # the profile's method entries: every fixture model but dense
    line = f"**Run not finished**: 1 of the profile's {pruned} pruned models not reached (slicegpt)"
    assert line in first_screen(text) and text.index(line) < text.index("Commit `")
    missing = text.split("## Not measured")[1]
    assert re.search(r"\| slicegpt +\| every measurement +\| not reached: the run did not finish", missing)
    assert "Every measurement the profile asked for finished" not in missing
    finished, _ = render(load_run(write_run(tmp_path / "done", models)), load_claims())
    assert "Run not finished" not in finished


def test_what_a_profile_meant_to_measure_and_did_not_is_a_failure_to_measure(tmp_path):
    """The same results missing from a profile that measures everything: the headline and its gate count them
    as failed to measure, none as skipped by design."""
    models = good_models()
    for spec in models.values():
        spec.pop("vllm", None)
        spec["omit"] = ["memory", "flops", "throughput_hf", "pruning_time"]
    run, claims = load_run(write_run(tmp_path / "r", models)), load_claims()
    text, _ = render(run, claims)
    # laco-beats-depth-baselines is not measured by design: the fixture's profile runs no depth baseline
    unmeasured = [v for v in Judge(run, claims).all() if v.status == "not measured" and "depth" not in v.claim.id]
    gated = [v for v in unmeasured if v.claim.gated_for(run.profile_name)]
    assert len(unmeasured) >= 5 and gated  # memory, speed, pruning time, vLLM; laco-memory-below-dense is gated
    headline = next(line for line in first_screen(text).splitlines() if "verdicts. Release gate" in line)
    assert re.search(rf" · {len(unmeasured)} failed to measure(\*\*| · )", headline), headline
    assert re.search(rf"\(gated: [^)]*{len(gated)} failed to measure\)", headline), headline
    assert " · 1 not measured by the profile's design · " in headline  # laco-beats-depth-baselines alone


def test_a_table_leaves_out_the_rows_and_columns_with_nothing_measured():
    text, dropped, empty = compact_table([["a", "1", "-"], ["b", "-", "-"], ["c", "2", ""]], ["model", "x", "y"])
    assert dropped == ["y"] and empty == 1
    assert [line.split("|")[1].strip() for line in text.splitlines()[2:]] == ["a", "c"]


def test_an_ablation_profile_renders_in_under_400_lines(tmp_path):
    """The shipped laco-ablations profile's 20 models (18 LaCo searches of about 20 steps, 288 verdicts), as
    the committed report ran them: perplexity and accuracy only."""
    models, claims = shaped_models("laco-ablations"), load_claims()
    run = load_run(write_run(tmp_path / "r", models, profile="laco-ablations",
                             settings={"measurements": ["perplexity", "accuracy"]}))
    text, _ = render(run, claims)
    assert "of 288 verdicts" in text  # 16 claims of the LaCo paper for each of the 18 searches
    assert len(text.splitlines()) <= 400
    first = first_screen(text)
    assert len(first.splitlines()) <= 80
    assert "| -" not in text.split("## Compute, memory and throughput")[1].split("\n## ")[0]
    # one line per variant with what it decided; what it left undecided only in the collapsed list
    undecided: dict[str, list[str]] = {}
    for v in Judge(run, claims).all():
        if v.status == "INCONCLUSIVE":
            undecided.setdefault(v.subject, []).append(v.claim.id)
    variants = [label for label, spec in models.items() if spec.get("method") == "laco" and label != "laco"]
    assert len(variants) == 17 and len(set(undecided) & set(variants)) >= 2
    full = text.split("## Verdicts in full")[1].split("</details>")[0]
    for label in variants:
        line, = re.findall(rf"^- \*\*{re.escape(label)}\*\* \(.*$", first, re.M)
        assert "INCONCLUSIVE" not in line
        if label in undecided:
            assert line.endswith(f"; {len(undecided[label])} undecided (*Verdicts in full*)"), line
            collapsed, = re.findall(rf"^- \*\*{re.escape(label)}\*\* \(.*$", full, re.M)
            assert all(f"`{claim}`" in collapsed for claim in undecided[label]), collapsed


def shaped_models(profile: str) -> dict:
    """A model per method entry of a shipped profile, LaCo with a search of 21 steps, ratios 26-34%."""
    entries = tomllib.loads((ROOT / "bench" / "profiles" / f"{profile}.toml").read_text())["methods"]
    good = good_models()
    models = {"dense": {k: good["dense"][k] for k in ("accuracy", "ppl", "weights")}}
    points = {}
    for entry in entries:  # a matched model's point is its match's (bench.profile.default_point)
        label, target = entry.get("label", entry["name"]), str(entry.get("target", ""))
        points[label] = entry.get("point") or points.get(target.removeprefix("match:")) or label
    for i, entry in enumerate(entries):
        label, method = entry.get("label", entry["name"]), entry["name"]
        ratio = (0.263, 0.289, 0.316, 0.342)[i % 4]
        trace = laco_record(30, LACO_STEPS * 3, 0.65, 4.0) if method == "laco" else None
        models[label] = {"method": method, "record": model_record(method, ratio, 4.0, trace), "ppl": 31.5 + i,
                         "accuracy": {t: s - 0.01 * (i % 5) for t, s in good["laco"]["accuracy"].items()},
                         "weights": f"w-{label}", "point": points[label], "paper": entry.get("paper")}
    return models


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the plots save, kept open and drawn, with the size of the PNG each became."""
    from PIL import Image

    import suites.plots

    figures, save = [], suites.plots.save

    def keep(fig, path):
        fig.canvas.draw()
        extents = {"legends": [leg.get_window_extent() for leg in fig.legends + [a.get_legend() for a in fig.axes]
                               if leg is not None], "axes": [a.get_window_extent() for a in fig.axes]}
        figures.append((fig, extents))
        monkeypatch.setattr(suites.plots.plt, "close", lambda f: None)
        save(fig, path)
        extents["png"] = Image.open(path).size
        return path

    monkeypatch.setattr(suites.plots, "save", keep)
    return figures


def test_similarity_gives_each_of_18_searches_its_own_colour_and_line(tmp_path, drawn):
    from suites.plots import similarity_plot

    steps = [{"pointer": p, "similarity": 0.9 - p / 100, "accepted": p % 2 == 0} for p in range(20, 10, -1)]
    similarity_plot({f"laco-{i}": {"config": {"T": 0.8}, "steps": steps} for i in range(18)}, tmp_path / "s.png")
    (fig, extents), = drawn
    series = [(tuple(line.get_color()), line.get_linestyle()) for line in fig.axes[0].get_lines()
              if line.get_label().startswith("laco-")]
    assert len(series) == 18 and len(set(series)) == 18
    assert len({color for color, _ in series[:10]}) == 10  # the first ten differ by colour alone


def test_the_retention_legend_of_18_models_lies_inside_the_image(tmp_path, drawn):
    """The legend stands below the axes, outside the 4.2-inch figure; the PNG is cut to hold it whole."""
    from suites.plots import retention_plot

    retention_plot({f"model-{i}": {"arc_easy": 0.5 + i / 100, "piqa": 0.7} for i in range(18)}, tmp_path / "r.png")
    (fig, extents), = drawn
    legend, axes = extents["legends"][0], extents["axes"][0]
    assert len(fig.axes[0].get_legend().get_texts()) == 18
    assert legend.y0 < 0  # below the figure's own canvas: a plain savefig would clip it
    width, height = extents["png"]
    assert height >= axes.y1 - legend.y0 and width >= legend.width


def test_ratio_plot_draws_the_papers_points_only_beside_ours_not_chance_normalised(tmp_path, drawn):
    """The paper's Table 7 points are Avg. / dense Avg. without chance normalisation: they stand in the panel of
    our score kept by that same formula, never on the above-chance axis."""
    from suites.plots import ratio_curve_plot
    from suites.statistics import Interval

    curves = {"laco": [{"ratio": r, "kept": k, "retention": Interval(k - 0.2, k - 0.3, k - 0.1), "ppl": Interval(2, 1.5, 3)}
                       for r, k in ((0.25, 0.9), (0.30, 0.8))]}
    paper = {"Llama2-7B": [(0.2755, 0.8215), (0.3, 0.75)]}
    ratio_curve_plot(curves, paper, tmp_path / "ratio.png")
    (fig, _), = drawn
    by_label = {ax.get_ylabel(): ax for ax in fig.axes}
    kept, above = by_label["Avg. / dense Avg. (%)"], by_label["(avg − chance) / (dense avg − chance) (%)"]
    papers = [line for line in kept.get_lines() if line.get_label() == "paper Table 7, Llama2-7B"]
    assert len(papers) == 1
    assert list(papers[0].get_xdata()) == pytest.approx([27.55, 30.0])
    assert list(papers[0].get_ydata()) == pytest.approx([82.15, 75.0])
    ours = next(line for line in kept.get_lines() if line.get_label() == "laco")
    assert list(ours.get_ydata()) == pytest.approx([90.0, 80.0])
    assert not [line for ax in fig.axes if ax is not kept for line in ax.get_lines() if "paper" in line.get_label()]
    assert "not chance-normalised" in kept.get_title() and "above chance" in above.get_title()


def test_what_the_verdicts_add_is_shown_where_it_is_given(tmp_path):
    """The verdicts' Holm levels, coverage below 95%, equivalence, left-out benchmarks and items to decide
    (set here by hand on the judged verdicts) appear in the first screen and the verdicts in full."""
    run, claims = load_run(write_run(tmp_path / "r", good_models())), load_claims()
    verdicts = Judge(run, claims).all()
    by = {(v.claim.id, v.subject): v for v in verdicts}
    several = by[("laco-ppl-below-baselines", "laco")]
    several.family_level = 0.05
    for row, level in zip(several.rows, (0.025, 0.05)):
        row.adjusted_level = level
    by[("laco-throughput-vs-dense", "laco")].rows[0].coverage = 0.83
    equal = by[("laco-memory-below-baselines", "laco")]
    equal.rows[0].status = equal.rows[1].status = "equal (within margin)"
    equal.__class__ = type("EqualVerdict", (Verdict,), {"status": "equal (within margin)"})  # as outcomes will decide
    retention = by[("laco-avg-retention", "laco")]
    retention.left_out = ["boolq: dense not above chance"]
    retention.rows[0].items_needed = {"piqa": "not decidable on this benchmark (200 available)", "boolq": 410}
    text, _ = render(run, claims, verdicts)
    first = first_screen(text)
    assert "family-wise level of 5% (Holm)" in first
    assert re.search(r"llm-pruner: 31\.50 vs 44\.00: ×[0-9.]+ \[[0-9., ]+\] \(level 0\.025\); slicegpt: .* \(level 0\.05\)",
                     first)
    assert re.search(r"×1\.21 \[1\.\d+, 1\.\d+\] \(~83% coverage\)", first)
    assert verdict_of(text, "laco-memory-below-baselines", "laco").startswith("= equal (within margin)")
    assert "Left out: boolq: dense not above chance (laco-avg-retention)." in first
    assert "items to decide: piqa not decidable on this benchmark (200 available), boolq 410" in text


def test_a_vllm_rate_served_over_several_ranks_says_how_many(tmp_path):
    path = write_run(tmp_path / "run", good_models())
    claims = load_claims()
    assert "tensor_parallel_size" not in render(load_run(path), claims)[0]
    for key in ("dense", "laco"):
        result = path / "results" / key / "throughput_vllm.json"
        doc = json.loads(result.read_text())
        doc["settings"]["vllm"] = {"tensor_parallel_size": 3}
        result.write_text(json.dumps(doc))
    assert "vllm: batch_size=4, input_len=64, output_len=32, rounds=6, warmup=1, resident=True, tensor_parallel_size=3" \
        in render(load_run(path), claims)[0]
