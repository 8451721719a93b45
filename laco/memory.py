"""Memory: sizes as a user writes them, what the machine has, the peak a step reaches, and a model's
shape in bytes, which the pruners' declared memory formulas (`laco.pruners.memory_need`) read.

The peak of a step is the process's resident-set high-water mark over that step. On Linux it is read
exactly: writing 5 to /proc/self/clear_refs resets VmHWM, which the kernel then keeps for us. Elsewhere
a thread samples the RSS every 10 ms (psutil). On CUDA, torch's max_memory_allocated is read as well.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from laco import LacoError

MB = 1_000_000
UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
         "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes of '6GB', '6 GiB', '512MB', '1.5G' or a plain number of bytes (GB = 10^9, GiB = 2^30)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in UNITS:
        raise LacoError(f"not a memory size: {text!r} (write e.g. 6GB, 6GiB, 512MB)")
    size = int(float(match.group(1)) * UNITS[unit])
    if size <= 0:
        raise LacoError(f"a memory size must be positive, got {text!r}")
    return size


def format_size(n: float) -> str:
    """'13.5 GB', '405 MB': decimal units, three significant figures."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def available_memory() -> int:
    """What the machine can give this process now (psutil's `available`: free plus reclaimable cache)."""
    import psutil

    return int(psutil.virtual_memory().available)


def rss_now() -> int:
    """Resident set size of this process now."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def _read_hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _read_hwm() is not None


class PeakMemory:
    """`with PeakMemory() as peak: ...`, then `peak.as_dict()`: the RSS high-water mark of the block
    (and CUDA's max_memory_allocated where CUDA is in use)."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak_rss: int | None = None
        self.cuda_peak: int | None = None
        self.how = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        if _reset_hwm():
            self.how = "VmHWM of the process, reset at the start of the step (Linux clear_refs)"
        else:
            self.how = f"RSS sampled every {self.interval * 1000:.0f} ms (psutil)"
            self._sampled = rss_now()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, rss_now())

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_rss = max(self._sampled, rss_now())
        else:
            self.peak_rss = _read_hwm()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.cuda_peak = int(torch.cuda.max_memory_allocated())

    def as_dict(self) -> dict:
        out = {"peak_rss_mb": self.peak_rss / MB if self.peak_rss is not None else None, "how": self.how}
        if self.cuda_peak is not None:
            out["cuda_max_memory_allocated_mb"] = self.cuda_peak / MB
        return out


# ---- a model's shape in bytes --------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    """What the memory formulas need to know of a model and its calibration batch."""

    n_layers: int
    layer_params: int  # one decoder layer (all layers alike)
    embedding_params: int
    head_params: int  # 0 when the head is tied to the embeddings
    other_params: int  # final norm and whatever else sits outside the layers
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    dtype_bytes: int
    batch: int = 1  # calibration texts
    seq: int = 1  # their padded length
    largest_tensor_params: int = 0  # the largest weight of a layer (float temporaries of a merge)

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def layer_bytes(self) -> int:
        return self.layer_params * self.dtype_bytes

    @property
    def non_layer_bytes(self) -> int:
        return (self.embedding_params + self.head_params + self.other_params) * self.dtype_bytes

    @property
    def weight_bytes(self) -> int:
        return self.n_layers * self.layer_bytes + self.non_layer_bytes

    @property
    def hidden_state_bytes(self) -> int:
        """One hidden state of the calibration batch, in the model's dtype."""
        return self.tokens * self.hidden * self.dtype_bytes

    def layer_activation_bytes(self) -> int:
        """A layer's forward: the MLP's three intermediate tensors, a few hidden-sized ones, attention scores."""
        return (self.tokens * (3 * self.intermediate + 6 * self.hidden) * self.dtype_bytes
                + self.batch * self.heads * self.seq * self.seq * 4)

    def calibrated(self, batch: int, seq: int) -> ModelShape:
        from dataclasses import replace

        return replace(self, batch=batch, seq=seq)


# A streamed formula's part that says how much of the layer cache the method can use: the layers its
# passes run again (all of them for a search or repeated dense passes; none for one pass). The plan
# gives the cache the smaller of that and what the bound leaves.
LAYER_CACHE = "layer cache (at most)"


def all_layers(shape: ModelShape) -> int:
    return shape.n_layers * shape.layer_bytes


DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def shape_of(model: torch.nn.Module, dtype_bytes: int | None = None) -> ModelShape:
    """The shape of a model, real or on the meta device (nothing is allocated)."""
    from laco.surgery import decoder_layers, parameter_count

    layers = decoder_layers(model)
    config = model.config
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is None or head.weight is embed.weight
    layer_params = parameter_count(layers[0])
    first = next(model.parameters())
    head_params = 0 if tied else head.weight.numel()
    other = parameter_count(model) - len(layers) * layer_params - embed.weight.numel() - head_params
    intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    return ModelShape(
        n_layers=len(layers), layer_params=layer_params, embedding_params=embed.weight.numel(), head_params=head_params,
        other_params=other, hidden=config.hidden_size, intermediate=intermediate, vocab=embed.weight.shape[0],
        heads=config.num_attention_heads, dtype_bytes=dtype_bytes or first.element_size(),
        largest_tensor_params=max(p.numel() for p in layers[0].parameters()),
    )


def meta_model(config, *, trust_remote_code: bool = False, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The model of a config with its parameters on the meta device and its buffers real (rotary
    frequencies are computed at construction and are not in a checkpoint)."""
    import copy

    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(copy.deepcopy(config), trust_remote_code=trust_remote_code,
                                                 **({"dtype": dtype} if dtype is not None else {}))
    model.tie_weights()  # a tied head shares the embeddings' tensor, as after from_pretrained
    return model.eval()
