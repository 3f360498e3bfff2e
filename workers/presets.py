"""Model dimensions of the proxies: `ModelConfig` and the named presets of configs/presets.yaml.

No torch here, so the driver can size models (parameters, FLOPs) without importing it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

PRESETS_ENV = "MIXOPT_PRESETS"
"""Environment variable: path of a presets YAML file to use instead of configs/presets.yaml."""

_DIM_KEYS = ("n_layer", "n_head", "d_model", "d_ff")
_OPTIONAL_KEYS = ("rope_base", "norm_eps")


@dataclass(frozen=True)
class ModelConfig:
    """Dimensions of the LLaMA-style GPT in workers/model.py."""

    vocab_size: int
    n_layer: int
    n_head: int
    d_model: int
    d_ff: int
    """Hidden width of the SwiGLU feed-forward (each of its two input projections)."""
    rope_base: float = 10_000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size",) + _DIM_KEYS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.vocab_size > 2**32:
            raise ValueError(f"vocab_size must fit the uint32 token shards (<= 2**32), got {self.vocab_size}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})")
        if self.head_dim % 2:
            raise ValueError(f"d_model / n_head must be even for rotary positions, got {self.head_dim}")
        for name in _OPTIONAL_KEYS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def num_params(self, embedding: bool = True) -> int:
        """Parameters of one model; embedding=False leaves out the input embedding and the head."""
        d, f = self.d_model, self.d_ff
        per_layer = 4 * d * d + 3 * d * f + 2 * d          # attention, SwiGLU, two norm gains
        body = self.n_layer * per_layer + d                # + final norm gain
        return body + (2 * self.vocab_size * d if embedding else 0)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward and backward): 6 N + 12 L d T, as in PaLM and nanoGPT.

        N counts every weight that takes part in a matrix product (all but the input embedding,
        which is a lookup); 12 L d T is the attention score and value products over a full T x T
        window (causal masking is not subtracted, which is the usual convention)."""
        n_matmul = self.num_params(embedding=True) - self.vocab_size * self.d_model
        return 6.0 * n_matmul + 12.0 * self.n_layer * self.d_model * seq_len

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def presets_path() -> Path:
    """The presets file: $MIXOPT_PRESETS, else configs/presets.yaml of the checkout that holds this
    package (the repository root is the parent of workers/), else ./configs/presets.yaml."""
    candidates = []
    if os.environ.get(PRESETS_ENV):
        candidates.append(Path(os.environ[PRESETS_ENV]))
    candidates.append(Path(__file__).resolve().parent.parent / "configs" / "presets.yaml")
    candidates.append(Path.cwd() / "configs" / "presets.yaml")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "no presets file found; looked at " + ", ".join(str(p) for p in candidates)
        + f" (set {PRESETS_ENV} to a presets YAML file)"
    )


def available_presets() -> dict[str, dict[str, Any]]:
    """Every named preset in the presets file: name -> dict of model dims."""
    path = presets_path()
    payload = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(payload, dict) or not all(isinstance(v, dict) for v in payload.values()):
        raise ValueError(f"{path}: expected a mapping of preset name -> mapping of model dims")
    return {str(name): dict(dims) for name, dims in payload.items()}


def load_preset(preset: str | dict[str, Any], vocab_size: int) -> ModelConfig:
    """The ModelConfig of a named preset (configs/presets.yaml) or of an inline dict of model dims,
    with the given vocabulary size. ValueError names an unknown preset or a bad dimension."""
    if isinstance(preset, str):
        presets = available_presets()
        if preset not in presets:
            raise ValueError(f"preset: unknown preset {preset!r} (known: {sorted(presets)})")
        dims = presets[preset]
    elif isinstance(preset, dict):
        dims = dict(preset)
    else:
        raise ValueError(f"preset must be a preset name or a dict of model dims, got {type(preset).__name__}")
    dims.pop("vocab_size", None)  # the corpus (or the spec's override) decides the vocabulary
    missing = [k for k in _DIM_KEYS if k not in dims]
    unknown = sorted(set(dims) - set(_DIM_KEYS) - set(_OPTIONAL_KEYS))
    if missing:
        raise ValueError(f"preset: model dims lack {missing}")
    if unknown:
        raise ValueError(f"preset: unknown model dims {unknown} (known: {list(_DIM_KEYS + _OPTIONAL_KEYS)})")
    return ModelConfig(vocab_size=int(vocab_size), **dims)
