"""bench: measure dense and pruned models and store every figure with its provenance.

One module per measurement (`accuracy`, `perplexity`, `memory`, `flops`, `throughput`,
`pruning_time`, and the vLLM engine in `vllm/`), profiles as TOML data (`profile`,
`profiles/*.toml`), the run directory (`store`: atomic writes, fingerprints, resume), the timed
phases of interleaved rounds (`rounds`), the pruned models of a run (`pruned`) and the steps that
tie them together (`runner`). The pruning core (`laco`) never imports this package.
"""
