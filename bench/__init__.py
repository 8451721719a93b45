"""bench: measure dense and pruned models and store every figure with its provenance.

One module per measurement (`accuracy`, `perplexity`, `memory`, `throughput`, `vllm_engine`),
profiles as TOML data (`profile`, `profiles/*.toml`), the run directory (`store`: atomic writes,
fingerprints, resume) and the loop that ties them together (`runner`). The pruning core (`laco`)
never imports this package.
"""
