"""What a measurement knows of the run it belongs to: the typed profile, the store, the data dir."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from bench.profile import CalibrationSettings, Profile
from bench.store import RunStore


class RunContext:
    """The profile (a `bench.profile.Profile`, read by attribute), the run store, the data dir, the
    shared result cache, and what several measurements share: the load arguments, the prepared tasks, the vLLM settings."""

    def __init__(self, profile: Profile, store: RunStore, data_dir: str | None, progress: bool, results_cache=None):
        self.profile, self.store, self.data_dir, self.progress = profile, store, data_dir, progress
        self.results_cache = results_cache  # a bench.results_cache.ResultsCache, None: off

    def dense_load_args(self, dtype: str | None = None) -> dict:
        """How the dense model loads: in the run's dtype, or in `dtype`."""
        m = self.profile.model
        return {"kind": "dense", "spec": m.spec, "revision": m.revision, "dtype": dtype or m.dtype, "device": m.device,
                "device_map": m.device_map, "trust_remote_code": m.trust_remote_code}

    def pruned_load_args(self, folder: Path) -> dict:
        m = self.profile.model
        return {"kind": "pruned", "folder": str(folder), "dtype": m.dtype, "device": m.device,
                "device_map": m.device_map, "trust_remote_code": m.trust_remote_code}

    def load_dense_to_prune(self):
        """A fresh copy of the dense model (a laco.loading.LoadedModel) in the prune dtype, for a pruner to change."""
        from bench.subject import load_dense

        return load_dense(self.dense_load_args(self.profile.model.pruning_dtype()))

    def load_to_prune(self, folder: str | None = None, label: str | None = None):
        """A fresh copy, in the prune dtype, of the dense model or of the model an earlier entry (`label`)
        saved in `folder`: a laco.loading.LoadedModel whose source names that entry and its weights."""
        if folder is None:
            return self.load_dense_to_prune()
        from bench.subject import load
        from laco.architectures import architecture_of
        from laco.loading import LoadedModel, ModelSource
        from laco.provenance import folder_weights_sha256

        model, tokenizer = load({**self.pruned_load_args(Path(folder)), "dtype": self.profile.model.pruning_dtype()})
        source = ModelSource(folder, "folder", f"{label} of this run", path=folder, sha256=folder_weights_sha256(folder))
        return LoadedModel(model, tokenizer, source, architecture_of(model))

    @cached_property
    def _tasks(self):
        from bench.tasks import prepare_tasks

        names = list(self.profile.accuracy.tasks)
        if self.profile.perplexity.lm_eval_wikitext:
            names.append("wikitext")
        return prepare_tasks(names, self.data_dir, self.store.root / "lm_eval_tasks", extra=self.profile.tasks)

    def tasks(self):
        return self._tasks

    @cached_property
    def _vllm(self) -> dict:
        from bench.vllm.environment import vllm_settings

        return vllm_settings(self.profile)

    def vllm_settings(self) -> dict:
        return self._vllm

    def calibration(self, settings: CalibrationSettings | None) -> tuple[list[str], dict]:
        """The calibration texts of the profile (or of one method) and their record."""
        from bench.calibration import calibration_texts

        return calibration_texts(settings if settings is not None else self.profile.calibration, self.data_dir, self.profile)
