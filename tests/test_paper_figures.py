"""suites/paper_figures.toml: the paper's tables, checked against each other as the paper's own arithmetic demands.

Most expected values are derived from other tables of the same file (Table 22 from Table 1, Table 2 from Tables 1
and 22, ...), so a figure mistyped in one table fails a check; a few cells typed here from the transcription catch
a shift that would move every table alike. The check names (C2, C3, ...) are those of the transcription.
"""

from pathlib import Path

import pytest

from laco import LacoError
from suites.paper import load_paper

PAPER_FILE = Path(__file__).resolve().parents[1] / "suites" / "paper_figures.toml"

# The paper's 14 benchmark columns in its order, with their categories (§3.2).
CATEGORIES = {
    "Reas.": ["CMNLI", "HeSw", "PIQA"],
    "Lan.": ["CHID", "WSC_P", "WSC_G"],
    "Know.": ["CSQA", "BoolQ"],
    "Exam.": ["MMLU", "CMMLU"],
    "Unde.": ["Race_H", "Race_M", "XSum", "C3"],
}
BENCHMARKS = [b for columns in CATEGORIES.values() for b in columns]
CATEGORY_NAMES = {"Reas.": "Reasoning", "Lan.": "Language", "Know.": "Knowledge", "Exam.": "Examination",
                  "Unde.": "Understanding"}
MODELS = ["Llama2-7B", "Llama2-13B", "Baichuan2-7B", "Baichuan2-13B"]
PRUNERS = ["llm-pruner", "slicegpt", "laco"]
# Rows per table, counted in the transcription.
ROWS = {1: 20, 2: 16, 3: 4, 4: 3, 5: 4, 6: 7, 7: 8, 8: 4, 9: 6, 10: 6, 11: 4, 12: 4, 13: 4, 15: 2, 16: 4, 17: 4,
        18: 5, 19: 4, 20: 16, 21: 2, 22: 16, 24: 7, 25: 8}
LACO_7B_ABLATION = {"BoolQ": 64.07, "PIQA": 69.80, "HeSw": 55.69}


@pytest.fixture(scope="module")
def paper():
    return load_paper(PAPER_FILE)


def one(paper, number, model, method=None, setting=None):
    rows = paper.rows(number, model, method, setting)
    assert len(rows) == 1, f"table {number}: {len(rows)} rows for {model} {method} {setting}"
    return rows[0]


def mean(values):
    return sum(values) / len(values)


def test_every_table_is_present_with_its_rows(paper):
    assert {t.number: len(t.rows) for t in paper.data.tables} == ROWS


def test_header_maps_profiles_methods_and_benchmarks(paper):
    data = paper.data
    assert data.reference_model == "Llama2-7B" and "2402.11187" in data.source
    assert data.models == {"llama2-7b": "Llama2-7B", "llama2-13b": "Llama2-13B", "baichuan2-7b": "Baichuan2-7B",
                           "baichuan2-13b": "Baichuan2-13B", "llama2-70b": "Llama2-70B",
                           "llama2-7b-shape": "Llama2-7B",  # the CPU rehearsal: Llama2-7B's shape, random weights
                           "llama2-7b-shape-gpu": "Llama2-7B"}  # the same on one GPU
    assert data.methods["dense"] == "Dense*" and data.methods["dense-official"] == "Dense"
    assert list(data.benchmarks) == BENCHMARKS
    for short, columns in CATEGORIES.items():
        assert {data.benchmarks[c].category for c in columns} == {CATEGORY_NAMES[short]}
    tasks = {name: b.task for name, b in data.benchmarks.items() if b.task}
    assert tasks == {"HeSw": "hellaswag", "PIQA": "piqa", "WSC_P": "wsc", "CSQA": "commonsense_qa", "BoolQ": "boolq",
                     "MMLU": "mmlu", "CMMLU": "cmmlu", "Race_H": "race", "Race_M": "race_middle"}
    assert paper.benchmark_of_task("wsc273") is None  # a different data set from the paper's WSC


def test_rows_name_known_methods_and_consistent_cells(paper):
    for table in paper.data.tables:
        for row in table.rows:
            assert row.method == "" or row.method in paper.data.methods, (table.number, row.method)
            assert row.method or row.setting, (table.number, row.model)
            assert set(row.filled) <= set(row.values) and not set(row.unreadable) & set(row.values)
            assert row.ratio is None or 0 <= row.ratio < 1


def test_table1_rows_have_the_14_benchmarks_except_the_leaderboard_wsc_p(paper):
    table = paper.table(1)
    assert table.columns == BENCHMARKS
    for model in MODELS:
        assert [r.method for r in paper.rows(1, model)] == ["dense-official", "dense", *PRUNERS]
    for row in table.rows:
        expected = set(BENCHMARKS) - ({"WSC_P"} if row.method == "dense-official" else set())
        assert set(row.values) == expected, (row.model, row.method)


def test_c2_table22_is_each_score_as_percent_of_dense(paper):
    checked = 0
    for model in MODELS:
        dense = one(paper, 1, model, "dense").values
        assert one(paper, 22, model, "dense").values == dict.fromkeys(BENCHMARKS, 100)
        for method in PRUNERS:
            scores, percent = one(paper, 1, model, method), one(paper, 22, model, method)
            assert (percent.ratio, percent.layers) == (scores.ratio, scores.layers)
            for column in BENCHMARKS:
                expected = 100 * scores.values[column] / dense[column]
                assert percent.values[column] == pytest.approx(expected, abs=0.01), (model, method, column)
                checked += 1
    assert checked == 168


def test_c3_c4_table2_averages_recompute_from_tables_1_and_22(paper):
    for model in MODELS:
        for method in ["dense", *PRUNERS]:
            scores, averages = one(paper, 1, model, method).values, one(paper, 2, model, method).values
            assert averages["Avg."] == pytest.approx(mean([scores[c] for c in BENCHMARKS]), abs=0.01), (model, method)
            for short, columns in CATEGORIES.items():  # the paper truncates some of these (C3)
                assert averages[short] == pytest.approx(mean([scores[c] for c in columns]), abs=0.01), (model, short)
            percent = one(paper, 22, model, method).values
            assert averages["Per."] == pytest.approx(mean([percent[c] for c in BENCHMARKS]), abs=0.01), (model, method)


def test_c6_table24_repeats_table1(paper):
    for model in ["Llama2-7B", "Baichuan2-7B"]:
        for method in ["dense", "laco"]:
            assert one(paper, 24, model, method).values == one(paper, 1, model, method).values


def test_c7_table6_averages_recompute_from_table24(paper):
    for row in paper.table(24).rows:
        averages = one(paper, 6, row.model, row.method or None, row.setting or None).values
        known = [c for c in BENCHMARKS if c in row.values]
        if len(known) == len(BENCHMARKS):
            assert averages["Avg."] == pytest.approx(mean([row.values[c] for c in BENCHMARKS]), abs=0.01)
        for short, columns in CATEGORIES.items():
            if set(columns) <= set(known):
                assert averages[short] == pytest.approx(mean([row.values[c] for c in columns]), abs=0.01)
    reprune = one(paper, 24, "Llama2-7B", setting="LaCo +post train +re prune")
    assert reprune.unreadable == ["CMNLI"] and reprune.repairs == ["R21"]


def test_c8_c9_table7_recomputes_from_table25_but_for_the_12_percent_row(paper):
    for row in paper.table(25).rows:
        averages = one(paper, 7, row.model, setting=row.setting)
        assert (averages.ratio, averages.layers) == (row.ratio, row.layers)
        avg = mean([row.values[c] for c in BENCHMARKS])
        reasoning = mean([row.values[c] for c in CATEGORIES["Reas."]])
        for short in ["Lan.", "Know.", "Exam.", "Unde."]:
            assert averages.values[short] == pytest.approx(mean([row.values[c] for c in CATEGORIES[short]]), abs=0.01)
        if (row.model, row.setting) == ("Llama2-7B", "12.0%/28"):  # the paper's own inconsistency (C8), kept as printed
            assert avg - averages.values["Avg."] == pytest.approx(30 / 14, abs=0.01)
            assert reasoning - averages.values["Reas."] == pytest.approx(10, abs=0.01)
            assert "C8" in averages.note and "C8" in row.note
        else:
            assert averages.values["Avg."] == pytest.approx(avg, abs=0.02)  # 45.0%/17 is off by 0.016 (C8)
            assert averages.values["Reas."] == pytest.approx(reasoning, abs=0.01)
    for model, setting in [("Llama2-7B", "27.1%/23"), ("Llama2-13B", "24.7%/30"), ("Llama2-13B", "0%/40")]:
        row = one(paper, 25, model, setting=setting)
        assert row.values == one(paper, 1, model, row.method).values
    # Table 1 prints Llama2-13B LaCo at 24.6%, Tables 7, 9 and 25 at 24.7% (C9).
    assert one(paper, 1, "Llama2-13B", "laco").ratio == pytest.approx(0.246)
    assert one(paper, 25, "Llama2-13B", "laco").ratio == pytest.approx(0.247)


def test_c10_the_llama2_7b_laco_result_recurs_in_the_ablations(paper):
    table1 = one(paper, 1, "Llama2-7B", "laco").values
    assert {c: table1[c] for c in LACO_7B_ABLATION} == LACO_7B_ABLATION
    for number, setting in [(10, "C=4"), (11, "I=2"), (12, "Result in Table 1"), (13, "T=0.65"), (15, "Merge"),
                            (16, "LaCo"), (17, "Wikipedia")]:
        row = one(paper, number, "Llama2-7B", "laco", setting)
        assert row.values == LACO_7B_ABLATION, number
    assert paper.table(18).rows[0].values == LACO_7B_ABLATION
    baichuan = one(paper, 16, "Baichuan2-7B", "laco")
    assert baichuan.values == {c: one(paper, 1, "Baichuan2-7B", "laco").values[c] for c in LACO_7B_ABLATION}
    assert baichuan.filled == ["HeSw"] and one(paper, 16, "Llama2-7B", "laco").filled == ["HeSw"]
    assert one(paper, 10, "Llama2-7B", setting="C=1").values == one(paper, 15, "Llama2-7B", "drop").values


def test_c11_hyperparameters_agree_across_tables_8_9_13(paper):
    for model in ["Llama2-7B", "Llama2-13B"]:
        assert one(paper, 8, model, "laco").values == one(paper, 9, model, "laco").values
        assert one(paper, 9, model, "laco").ratio == one(paper, 25, model, "laco").ratio
    for row in paper.table(8).rows:
        assert row.values["H"] == one(paper, 1, row.model, "dense").layers
    assert one(paper, 13, "Llama2-7B", "laco").ratio == one(paper, 9, "Llama2-7B", "laco").ratio == 0.271
    assert one(paper, 8, "Baichuan2-13B", "laco").repairs == ["R12"]


def test_c12_table5_is_table20s_llama2_13b_block(paper):
    table5 = {r.method: r.values for r in paper.rows(5, "Llama2-13B")}
    assert table5 == {r.method: r.values for r in paper.rows(20, "Llama2-13B")}
    assert set(table5) == {"dense", *PRUNERS}


def test_table20_down_marks_are_kept_as_printed(paper):
    marked = {(r.model, r.method) for r in paper.table(20).rows if r.note.startswith("Printed with ↓")}
    assert marked == {("Llama2-7B", "llm-pruner"), ("Llama2-13B", "llm-pruner"), ("Baichuan2-7B", "llm-pruner"),
                      ("Baichuan2-13B", "llm-pruner"), ("Baichuan2-13B", "slicegpt")}
    assert "C13" in one(paper, 20, "Baichuan2-7B", "llm-pruner").note


def test_hand_picked_cells_from_the_transcription(paper):
    laco = one(paper, 1, "Llama2-7B", "laco")
    assert (laco.ratio, laco.layers, laco.values["MMLU"]) == (0.271, 23, 26.45)
    assert one(paper, 1, "Baichuan2-13B", "slicegpt").values["CHID"] == 10.40
    assert one(paper, 1, "Llama2-13B", "llm-pruner").values["PIQA"] == 76.66
    assert one(paper, 1, "Llama2-13B", "llm-pruner").repairs == ["R6"]
    assert one(paper, 2, "Baichuan2-7B", "laco").values["Per."] == 73.26
    assert paper.figure(3, "PPL", "Llama2-7B", "laco").value == 13.93
    assert paper.figure(3, "PPL", "Llama2-7B", "dense").value == 4.46
    assert paper.figure(4, "seconds", "Llama2-7B", "slicegpt").value == 313
    assert paper.figure(19, "Average", "Llama2-70B", "laco").value == 57.91
    assert one(paper, 19, "Llama2-70B", "laco").ratio == 0.30
    assert paper.figure(20, "memory_mb", "Llama2-7B", "laco").value == 9894
    assert paper.figure(20, "tokens_per_s", "Llama2-7B", "laco").value == 50.80
    assert one(paper, 21, "Llama2-7B", setting="LLM-Pruner 55% +post train").values["gpu_hours"] == 216
    filled = paper.figure(25, "HeSw", "Llama2-7B", "dense")
    assert filled.filled and filled.value == 71.35 and filled.cite() == "71.35† (Table 25, R22, Llama2-7B)"


@pytest.mark.parametrize("anchor, typo, key", [
    ('reference_model = "Llama2-7B"\n', 'referense_model = "Llama2-7B"\n', "'referense_model'"),
    ('method = "laco"\nratio = 0.271\n', 'method = "laco"\nratoi = 0.271\n', r"'tables\.0\.rows\.4\.ratoi'"),
])
def test_an_unknown_key_is_refused_by_name(tmp_path, anchor, typo, key):
    text = PAPER_FILE.read_text(encoding="utf-8")
    assert anchor in text
    path = tmp_path / "paper_figures.toml"
    path.write_text(text.replace(anchor, typo, 1), encoding="utf-8")
    with pytest.raises(LacoError, match=f"unknown key {key}"):
        load_paper(path)
