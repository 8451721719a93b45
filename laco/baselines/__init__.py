"""Baselines the LaCo paper and its peers compare against, each a pruner behind the interface of
`laco.pruners` (registered there by name):

- `drop` (LaCo's loop deleting instead of merging, paper appendix B.6) and `rule_merge` (fixed
  groups merged from the top, B.7): depth pruning, the LaCo ablations;
- `shortgpt` (delete the layers of least Block Influence) and `come` (concatenation-based merging
  of adjacent layers, "Layer as Puzzle Pieces"): depth pruning, the closest peers;
- `llm_pruner` (attention groups and MLP channels by Taylor importance) and `slicegpt` (PCA
  rotation, then slicing of the hidden width): width pruning, the paper's comparison.

`common` holds what they share; `compare` runs them all at LaCo's ratio on one model.
"""
