"""The rehearsal section of a run on a synthetic stand-in: ours beside the paper's Tables 4 and 20, the
projection to the paper's GPU by the ratio of peak rates, and the bounds each figure is checked against.
Expected values are worked out here from the fixture's inputs and the datasheet figures, not read back
from the code."""

import math

from run_fixtures import DENSE_PARAMS, PROBE, good_models, model_record, write_run

from suites.claims import load_claims
from suites.evidence import load_run
from suites.report import render
from suites.report.scale import scale_section

A100_BF16_GFLOPS, A100_GBPS = 312_000, 2039  # NVIDIA A100 80GB SXM datasheet
SYNTHETIC = {"synthetic": True, "note": "synthetic weights: speed and memory only", "name": "llama2-7b",
             "config_source": "a config", "tokenizer": {"vocab_size": 32000}}


def stand_in(models: dict) -> dict:
    for spec in models.values():
        if "record" in spec:
            spec["record"] = {**spec["record"], "source": {**spec["record"]["source"], "kind": "synthetic",
                                                           "synthetic": SYNTHETIC}}
    return models


def row_of(text: str, figure: str, model: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0] == figure and cells[1] == model:
            return cells[:2] + cells[3:]  # the ratio column left out: figure, model, paper, ours, projections, bound
    raise AssertionError(f"no row {figure!r} / {model!r} in:\n{text}")


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def test_a_run_on_real_weights_has_no_rehearsal_section(tmp_path):
    run = load_run(write_run(tmp_path / "run", good_models()))
    assert scale_section(run, load_claims()) == ""


def test_laco_pruning_time_beside_table_4_and_projected_by_flop_and_byte_ratios(tmp_path):
    run = load_run(write_run(tmp_path / "run", stand_in(good_models())))
    text = scale_section(run, load_claims())
    cells = row_of(text, "pruning, s", "laco")
    assert cells[2] == "14.7 (Table 4)"  # the paper's LaCo on Llama2-7B, one A100
    ours = geometric_mean([4.1 * f for f in (1.0, 1.03, 0.98)])  # the fixture's three timings
    assert cells[3].startswith(f"{ours:.3g} [") and cells[3].endswith("(3 timings)")
    # float32 run: the probe's fp32 rate against the A100's bf16 peak; bytes/s against its bandwidth
    assert cells[4].startswith(f"{ours * PROBE['fp32_gflops'] / A100_BF16_GFLOPS:.3g} [")
    assert cells[5].startswith(f"{ours * PROBE['memory_gbps'] / A100_GBPS:.3g} [")
    assert row_of(text, "pruning, s", "llm-pruner")[2] == "15.9 (Table 4)"
    assert row_of(text, "pruning, s", "drop")[2] == "-"  # the paper did not time drop


def test_memory_beside_table_20_is_checked_against_parameters_times_bytes(tmp_path):
    models = stand_in(good_models())
    models["dense"]["param_mb"] = DENSE_PARAMS * 4 / 2**20  # float32: exactly its weights
    run = load_run(write_run(tmp_path / "run", models))
    text = scale_section(run, load_claims())
    dense = row_of(text, "parameter memory, MB", "dense")
    assert dense[2] == "13,410 (Table 20)" and dense[3] == f"{DENSE_PARAMS * 4 / 2**20:,.0f} (exact)"
    assert dense[6] == "= parameters x 4 B"
    laco = row_of(text, "parameter memory, MB", "laco")  # 374.6 MB against the fixture's dense parameter count
    assert laco[2] == "9,894 (Table 20)" and laco[6].startswith("**375 against parameters x 4 B = ")


def test_decode_rate_projected_by_bandwidth_and_checked_against_reading_the_weights(tmp_path):
    models = stand_in(good_models())
    run = load_run(write_run(tmp_path / "run", models))
    text = scale_section(run, load_claims())
    dense = row_of(text, "decode, tokens/s (HF)", "dense")
    assert dense[2] == "38.53 (Table 20)"
    rounds = run.results["dense"]["throughput_hf"].values["per_round"]["decode_tokens_per_s"]
    ours = geometric_mean(rounds)
    assert dense[3].startswith(f"{ours:.3g} [") and "(6 rounds, batch 4)" in dense[3]
    assert dense[5].startswith(f"{ours * A100_GBPS / PROBE['memory_gbps']:.3g} [")
    # 4 sequences a step, 9 GB/s, 513.1 MB of weights: at most 4 x 9e9 / (513.1 x 2^20) = 66.9 tokens/s
    bound = 4 * PROBE["memory_gbps"] * 1e9 / (513.1 * 2**20)
    assert dense[6] == f"within ≤ {bound:.3g} here"
    models["dense"]["hf"] = 90.0  # faster than the weights can be read
    text = scale_section(load_run(write_run(tmp_path / "fast", models)), load_claims())
    assert row_of(text, "decode, tokens/s (HF)", "dense")[6].startswith("**above: not a decode rate**")


def two_points() -> dict:
    """good_models with a second ratio point: drop at 45% beside the 27% models."""
    models = good_models()
    models["drop-45"] = {**models["drop"], "record": model_record("drop", 0.45, 3.0), "point": "45%", "weights": "w-d45",
                         "ppl": 90.0}
    return models


def test_a_synthetic_run_has_no_quality_findings_and_no_retention_curve(tmp_path):
    real = render(load_run(write_run(tmp_path / "real", two_points())), load_claims())[0]
    assert "## Retention against the pruning ratio" in real and f"perplexity is ×{31.5 / 18.2:.3g} dense's" in real
    synthetic = render(load_run(write_run(tmp_path / "synthetic", stand_in(two_points()))), load_claims())[0]
    assert "## Retention against the pruning ratio" not in synthetic
    assert "- **laco** (27.0% removed)" in real and "- **laco** (27.0% removed)" not in synthetic  # the effects line
    assert "## At the paper's scale" in synthetic


def test_a_finding_without_scores_reads_as_a_sentence(tmp_path):
    models = good_models()
    for spec in models.values():
        spec.pop("accuracy", None)
    text = render(load_run(write_run(tmp_path / "run", models)), load_claims())[0]
    assert f"**laco** (27.0% removed) has a perplexity ×{31.5 / 18.2:.3g} dense's" in text
