"""Engine `vllm`: throughput (and lm-eval's vllm backend for accuracy) in a separate environment.

vLLM pins its own torch and transformers, so it lives in an environment of its own and the main
environment never imports it. The bench runs `bench.vllm_worker` with that interpreter on the
saved weights folder. A missing environment, a model the pruner marks as not loadable by vLLM, or
a model vLLM fails to load gives an "n/a" result with the reason; nothing is skipped silently.

- `environment`: where the vLLM environment is, what it holds, and the path its worker runs with
  (this project's packages and the plugin that registers bench/vllm_models.py's architectures);
- `client`: the worker's processes: one-shot jobs (accuracy, greedy) and `VllmSession`, one
  model's engine kept alive between timed batches;
- `measure`: the measurement interface: throughput_vllm's settings and timing for the phase of
  interleaved rounds (bench.phase), and the accuracy backend `vllm`.

Outputs no stock architecture describes (LLM-Pruner's per-layer widths, SliceGPT's sliced stream)
are served by the out-of-tree models of bench/vllm_models.py; each pruner says what vLLM must be
told for its outputs (`laco.pruners.vllm_overrides_for`).
"""
