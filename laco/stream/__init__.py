"""Pruning a model larger than memory, layer by layer (issue 18).

- `store`: the model folder as a layer store (skeleton model, layers loaded around their forward, cache);
- `shards`: safetensors read one tensor at a time, written one shard at a time;
- `model`: opening a folder streamed, writing a pruned streamed model;
- `plan`: resident, streamed or refused, from the methods' declared memory formulas;
- `prune`: the streamed `laco prune`.
"""
