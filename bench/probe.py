"""The machine probe: how fast this machine is right now, measured in about two seconds as a run starts.

The same code ran 2-3x faster on one day than on another on these machines (a shared host, another
load, another clock), so an absolute rate of one run (tokens/s, seconds) says little about another
run's. Each run therefore records, in run.json (`probe`), three fixed workloads on its device:

- fp32_gflops, bf16_gflops: a square matrix multiplication (SIZE[device]) in each dtype, GFLOP/s;
- memory_gbps: a copy of a large buffer, bytes read plus written per second, GB/s.

Each is the median rate over repeated calls within its time budget, after one warm-up call.
`laco compare` and `laco history` divide absolute rates by the ratio of two runs' probes before they
compare them (suites.compare.machine_ratio); within-run ratios need no probe. A probe that fails
records why and never stops the run.
"""

from __future__ import annotations

import statistics
import time

SIZE = {"cpu": 512, "cuda": 4096}  # matmul side: a few ms a call on either
COPY_BYTES = {"cpu": 64 << 20, "cuda": 1 << 30}  # larger than the caches
BUDGET_S = 0.3  # per workload: about a second in all


def measure(device: str = "cpu", budget_s: float = BUDGET_S) -> dict:
    """{fp32_gflops, bf16_gflops, memory_gbps, device, seconds, sizes}, or {error, device} when it cannot run."""
    started = time.perf_counter()
    try:
        import torch

        dev = torch.device(device)
        kind = "cuda" if dev.type == "cuda" else "cpu"
        n, copy_bytes = SIZE[kind], COPY_BYTES[kind]
        rates = {f"{name}_gflops": _matmul_rate(torch, dev, dtype, n, budget_s)
                 for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
        rates["memory_gbps"] = _copy_rate(torch, dev, copy_bytes, budget_s)
    except Exception as exc:  # noqa: BLE001  (a probe never stops a run: it says why it has no figure)
        return {"error": f"{type(exc).__name__}: {exc}", "device": str(device)}
    return {**{k: round(v, 3) for k, v in rates.items()}, "device": str(device),
            "seconds": round(time.perf_counter() - started, 3), "sizes": {"matmul": n, "copy_bytes": copy_bytes}}


def _timed(torch, dev, call, budget_s: float, at_least: int = 3) -> list[float]:
    """Seconds of each call of `call` within the budget (at least `at_least`), after a warm-up call."""
    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    call()
    sync()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < at_least or (time.perf_counter() < end and len(times) < 1000):
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _matmul_rate(torch, dev, dtype, n: int, budget_s: float) -> float:
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=dev).to(dtype)
    b = torch.randn(n, n, generator=gen, device=dev).to(dtype)
    times = _timed(torch, dev, lambda: torch.mm(a, b), budget_s)
    return 2 * n**3 / statistics.median(times) / 1e9


def _copy_rate(torch, dev, nbytes: int, budget_s: float) -> float:
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    times = _timed(torch, dev, lambda: dst.copy_(src), budget_s)
    return 2 * nbytes / statistics.median(times) / 1e9


def float64_gflops(device: str = "cpu", budget_s: float = BUDGET_S) -> float | None:
    """The float64 matmul rate (GFLOP/s) at the probe's size; None where it cannot run."""
    try:
        import torch

        dev = torch.device(device)
        return round(_matmul_rate(torch, dev, torch.float64, SIZE["cuda" if dev.type == "cuda" else "cpu"], budget_s), 3)
    except Exception:  # noqa: BLE001  (a probe never stops a run)
        return None


PROBE_VOCAB = 256  # the one-layer copy's vocabulary: its embeddings and head are no part of a layer
SLOW_CALL_S = 1.0  # a layer forward this slow is timed once (a 7B layer over SliceGPT's batch: 14 s a call)


def layer_forward_seconds(config, batch: int, seq: int, dtype: str, device: str = "cpu", *,
                          trust_remote_code: bool = False, budget_s: float = BUDGET_S) -> float | None:
    """Seconds of one decoder layer's forward over a batch of `batch` x `seq` tokens: the median over
    calls of a one-layer copy of the model's architecture with constant weights (its embeddings and
    head cut to PROBE_VOCAB tokens), in `dtype` on `device`. A prune's work is counted in such
    forwards (`laco.work`); timing one here keeps attention, norms and a small model's per-call
    overhead in the figure. None where the copy cannot be built or run."""
    try:
        import torch

        dev = torch.device(device)
        model = one_layer_copy(config, dtype, dev, trust_remote_code)
        with torch.no_grad():
            ids = torch.arange(batch * seq, device=dev).reshape(batch, seq) % PROBE_VOCAB
            mask = torch.ones_like(ids)
            body = model.get_decoder()
            started = time.perf_counter()
            body(input_ids=ids, attention_mask=mask)  # the warm-up, timed: a call of over a second is its own figure
            first = time.perf_counter() - started
            if first > SLOW_CALL_S:
                return first
            times = _timed(torch, dev, lambda: body(input_ids=ids, attention_mask=mask), budget_s, at_least=2)
        return statistics.median(times)
    except Exception:  # noqa: BLE001  (the plan says it has no figure; the run's own checks say what is wrong)
        return None


def one_layer_copy(config, dtype: str, dev, trust_remote_code: bool = False):
    """The model of `config` with one decoder layer and PROBE_VOCAB tokens, its weights constant (no
    uninitialised memory, NaNs or denormals, in a timing), in `dtype` on `dev`."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from laco.loading import DTYPES

    one = copy.deepcopy(config)
    one.num_hidden_layers, one.vocab_size = 1, PROBE_VOCAB
    for key in ("layer_types", "mlp_only_layers"):  # per-layer lists of some families, cut to the one layer
        if isinstance(getattr(one, key, None), list):
            setattr(one, key, getattr(one, key)[:1])
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(getattr(one, key, None), int) and getattr(one, key) >= PROBE_VOCAB:
            setattr(one, key, 0)
    with no_init_weights(), dev:
        model = AutoModelForCausalLM.from_config(one, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(0.02)
    return model


def load_seconds_per_gb(config, dtype: str, folder, *, trust_remote_code: bool = False) -> float | None:
    """Seconds a model load takes per GB of weights: the one-layer copy saved under `folder` (removed), loaded
    back with transformers on the CPU and every weight read once (a load maps the files; their pages are read
    when first used), its files in the page cache as a copy the run has just written is. A dense model's
    first load from the disk takes longer (the plan says so). None where it cannot run."""
    import tempfile

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a probe prints nothing; the user's setting comes back below
    try:
        import torch
        from transformers import AutoModelForCausalLM

        from laco.loading import DTYPES

        with tempfile.TemporaryDirectory(prefix=".laco-load-probe-", dir=folder) as tmp:
            model = one_layer_copy(config, dtype, torch.device("cpu"), trust_remote_code)
            model.save_pretrained(tmp)
            nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
            del model
            started = time.perf_counter()
            loaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
            with torch.no_grad():
                for parameter in loaded.parameters():
                    parameter.clone()
            return (time.perf_counter() - started) / (nbytes / 1e9)
    except Exception:  # noqa: BLE001  (the plan says it has no figure)
        return None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def synthetic_parameters_per_second(dtype: str) -> float | None:
    """How fast a synthetic model's weights are drawn here (`laco.synthetic.initial_tensor`, seeded normal
    values in `dtype`): parameters per second over a 4096 x 4096 matrix, the faster of two draws."""
    try:
        import torch

        from laco.synthetic import initial_tensor

        times = []
        for _ in range(2):
            started = time.perf_counter()
            initial_tensor("probe.weight", torch.Size([4096, 4096]), getattr(torch, dtype), 0, 0.02)
            times.append(time.perf_counter() - started)
        return 4096 * 4096 / min(times)
    except Exception:  # noqa: BLE001  (the plan says it has no figure)
        return None
