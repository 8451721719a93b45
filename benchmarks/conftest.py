"""pytest-benchmark timings of the pruning core on the embedded SmolLM2-135M (`tox -e perf`).

Not collected by the unit tests (pyproject's testpaths = tests): timings are noisy on shared
machines, so nothing here asserts a speed. The LaCo search benchmarks assert that the cached and
the naive engine make the same decisions, and the terminal summary prints the cached/naive
ratio (the goal: at least 2.5x)."""

from __future__ import annotations

import copy

import pytest

SEARCH_GOAL = 2.5  # cached search at least this many times faster than the naive one
SEARCH: dict[str, dict] = {}  # engine -> {"median", "min", "max", "rounds", "decisions", "steps", "layers_before"}
DECODE: dict[int, dict] = {}  # layer count -> {"median", ..., "flops_per_token"}: filled by the decode-step benchmarks


@pytest.fixture(scope="session")
def smollm2():
    from laco.loading import load_model

    try:
        return load_model("smollm2-135m")
    except Exception as exc:  # the package is installed by tox; say so when it is missing
        pytest.skip(f"embedded SmolLM2 unavailable: {exc}")


@pytest.fixture(scope="session")
def calibration(smollm2) -> dict:
    from laco.calibration import default_sentences, tokenize

    return tokenize(smollm2.tokenizer, default_sentences())


@pytest.fixture(scope="session")
def fresh_model(smollm2):
    """A function giving a copy of the dense model, for benchmarks that change it."""
    return lambda: copy.deepcopy(smollm2.model)


def stats_of(benchmark) -> dict | None:
    """Median, min, max (s) and rounds of a finished benchmark; None under --benchmark-disable."""
    if not benchmark.stats:
        return None
    return {key: benchmark.stats[key] for key in ("median", "min", "max", "rounds")}


def search_ratio() -> dict | None:
    """Naive / cached search time: the ratio of medians and the range the spreads allow, beside
    the compute-bound ideal (`layer_forwards`)."""
    naive, cached = SEARCH.get("naive"), SEARCH.get("cached")
    if not (naive and cached and naive.get("median") and cached.get("median")):
        return None
    ideal = layer_forwards(naive["steps"], naive["layers_before"], "naive") / layer_forwards(
        cached["steps"], cached["layers_before"], "cached")
    return {"median": naive["median"] / cached["median"], "low": naive["min"] / cached["max"],
            "high": naive["max"] / cached["min"], "same_decisions": naive["decisions"] == cached["decisions"],
            "compute_ideal": ideal}


def layer_forwards(steps, layers_before: int, engine: str) -> int:
    """Decoder-layer forwards of a search: one dense forward for the trace, then per candidate
    the whole candidate model (naive) or only the merged layer and the layers above it (cached)."""
    total = layers_before
    for s in steps:
        before = s.n_layers + (s.k if s.accepted else 0)  # the layer count the candidate started from
        total += before - s.k - (s.pointer if engine == "cached" else 0)
    return total


def pytest_terminal_summary(terminalreporter):
    decode_summary(terminalreporter)
    ratio = search_ratio()
    if ratio is None:
        return
    naive, cached = SEARCH["naive"], SEARCH["cached"]
    verdict = "goal met" if ratio["median"] >= SEARCH_GOAL and ratio["same_decisions"] else "goal NOT met"
    terminalreporter.section("LaCo search: cached vs naive engine (SmolLM2-135M, same input)")
    for name, s in (("naive", naive), ("cached", cached)):
        terminalreporter.write_line(f"{name:>6}: median {s['median']:.2f} s (min {s['min']:.2f}, max {s['max']:.2f}; "
                                    f"{s['rounds']} rounds)")
    terminalreporter.write_line(
        f"cached/naive speed-up: {ratio['median']:.2f}x (ratio of medians; {ratio['low']:.2f}x to {ratio['high']:.2f}x "
        f"from min/max), same decisions: {'yes' if ratio['same_decisions'] else 'NO'}; "
        f"goal >= {SEARCH_GOAL}x with identical decisions: {verdict}")
    terminalreporter.write_line(
        f"compute-bound ideal (decoder-layer forwards, naive / cached): {ratio['compute_ideal']:.2f}x; "
        "the naive engine's model copies come on top")


def decode_summary(terminalreporter) -> None:
    """Each depth's decode step beside the deepest one: measured speed-up and the FLOPs ideal."""
    timed = {n: s for n, s in DECODE.items() if s.get("median")}
    if len(timed) < 2:
        return
    deepest = max(timed)
    terminalreporter.section(f"decode step (SmolLM2-135M): speed-up over {deepest} layers, measured vs FLOPs ideal")
    for n in sorted(timed, reverse=True):
        s = timed[n]
        terminalreporter.write_line(
            f"{n:>3} layers: median {s['median'] * 1e3:.1f} ms, measured {timed[deepest]['median'] / s['median']:.2f}x, "
            f"ideal {timed[deepest]['flops_per_token'] / s['flops_per_token']:.2f}x")
