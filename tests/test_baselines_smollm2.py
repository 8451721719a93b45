"""Every baseline on the real SmolLM2-135M at a 20% ratio: the ratio is met, the perplexity is finite
and worse than the dense model's (2 windows of 512 tokens of WikiText-2 test, a quick check)."""

import math

import pytest

from bench.baselines_compare import window_perplexity
from laco.calibration import default_sentences, wikitext_calibration
from laco.pruners import get_pruner

pytestmark = pytest.mark.smollm2

LAYER_SHARE = 3_540_096 / 134_515_008  # one SmolLM2 decoder layer, as a share of all parameters


@pytest.fixture(scope="module")
def wikitext(data_dir):
    return (data_dir / "wikitext" / "wiki.test.raw").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def dense_ppl(smollm2, wikitext):
    loaded = smollm2()
    return window_perplexity(loaded.model, loaded.tokenizer, wikitext, n_windows=2)["ppl"]


# drop's target search is LaCo's bisection on T (tested with LaCo), minutes on SmolLM2; here drop gets
# a fixed T from the middle of the range that the search found to keep 22 layers (T in 0.4375..0.4846)
TARGETS = {"drop": {"T": 0.46}}


@pytest.mark.parametrize("method", ["drop", "rule-merge", "shortgpt", "come", "llm-pruner", "slicegpt"])
def test_baseline_at_20_percent_has_finite_perplexity(smollm2, wikitext, dense_ppl, data_dir, method):
    loaded = smollm2()
    # SliceGPT needs at least as many calibration tokens as the directions it keeps: wikitext-2 test
    # document 2 (about 3000 tokens), which the two perplexity windows (inside document 0) never read
    sentences = wikitext_calibration(2, 3, data_dir)[0] if method == "slicegpt" else default_sentences()
    out = get_pruner(method)(loaded, sentences, progress=False, **TARGETS.get(method, {"target_ratio": 0.2}))
    # depth methods: within half a layer of the target; width methods: finer granules
    assert abs(out.record["parameters"]["pruning_ratio"] - 0.2) <= LAYER_SHARE / 2
    ppl = window_perplexity(out.model, loaded.tokenizer, wikitext, n_windows=2)["ppl"]
    assert math.isfinite(ppl) and ppl > dense_ppl
