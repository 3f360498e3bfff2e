"""ProxySpec: the training recipe of a proxy run, shared by every proxy of a study.

A plain dataclass without torch so that the driver (config validation, run keys) can import it
cheaply. It round-trips through a dict: `ProxySpec(**dataclasses.asdict(spec)) == spec`, which is
how it travels from YAML to the driver and from the driver to the Ray workers.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

SCHEDULES = ("cosine", "linear", "constant", "wsd")
AVERAGES = ("none", "ema", "tail")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass
class ProxySpec:
    """How to train and evaluate one proxy (every proxy of a pack shares it).

    The run trains `tokens // (batch_size * seq_len)` steps of `batch_size` windows of `seq_len`
    tokens, then evaluates on the first `eval_tokens` tokens of every domain's val split.
    """

    preset: str | dict[str, Any] = "cpu-0.5m"
    """A name in configs/presets.yaml, or an inline dict of model dims (n_layer, n_head, d_model, d_ff)."""
    tokens: int = 2_400_000
    """Training tokens per proxy (rounded down to whole steps)."""
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    """Peak learning rate of AdamW."""
    warmup: float = 0.1
    """Linear warmup, as a fraction of the training steps."""
    schedule: str = "cosine"
    """Decay after warmup: cosine, linear, constant, or wsd (warmup-stable-decay: the peak rate until
    the last `cooldown` of the steps, then a linear fall to final_lr)."""
    final_lr: float = 0.1
    """Learning rate at the last step, as a fraction of the peak (cosine, linear and wsd)."""
    cooldown: float = 0.2
    """wsd only: the fraction of the steps, at the end, over which the rate falls to final_lr."""
    average: str = "none"
    """Which weights are evaluated: "none" (the last step's), "tail" (the mean of the weights after
    each of the last `average_window` of the steps) or "ema" (an exponential moving average of the
    weights with a time constant of `average_window` of the steps). Averaging the end of the
    trajectory removes most of the step-to-step jitter of the last updates, which differs from
    proxy to proxy and reads as seed noise."""
    average_window: float = 0.2
    """The window of `average`, as a fraction of the training steps (at least one step)."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices and embeddings; never on norm gains."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip each proxy's global gradient norm to this (0: no clipping)."""
    eval_tokens: int = 65_536
    """Held-out tokens per domain (the first ones of its val split, the same for every proxy)."""
    eval_batch_size: int | None = None
    """Windows per evaluation batch (default: batch_size)."""
    curve_every: int = 10
    """Record the mean training loss of every this many steps in the result's "curve"."""
    vocab_size: int | None = None
    """Override the corpus vocabulary (benchmarks only: e.g. 50000 to time a BPE-sized model)."""
    device: str = "auto"
    """auto (cuda when visible, else cpu), cpu, cuda or cuda:N."""
    compile: bool | None = None
    """torch.compile the training forward and backward. None (auto): only runs of at least 200
    steps, where the one-off compilation (about a minute on a 2-core CPU, seconds once cached on
    disk) pays back; its fused elementwise kernels save about an eighth of a CPU step."""
    autocast: bool = True
    """bf16 autocast on cuda (parameters and optimizer stay fp32). Never used on cpu."""
    crash_once_marker: str | None = None
    """Test hook: a file path. A worker that finds it missing creates it and dies with os._exit(1)."""

    def __post_init__(self) -> None:
        if isinstance(self.preset, str):
            if not self.preset.strip():
                raise ValueError("preset must be a preset name or a dict of model dims, got an empty string")
        elif not isinstance(self.preset, dict):
            raise ValueError(f"preset must be a preset name or a dict of model dims, got {type(self.preset).__name__}")
        for name in ("tokens", "batch_size", "seq_len", "eval_tokens", "curve_every"):
            _positive_int(name, getattr(self, name))
        for name in ("eval_batch_size", "vocab_size"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.tokens < self.batch_size * self.seq_len:
            raise ValueError(
                f"tokens must be at least batch_size * seq_len = {self.batch_size * self.seq_len} "
                f"(one training step), got {self.tokens}"
            )
        _number("lr", self.lr, low=0.0, low_open=True)
        _number("warmup", self.warmup, low=0.0, high=1.0, high_open=True)
        _number("final_lr", self.final_lr, low=0.0, high=1.0)
        _number("weight_decay", self.weight_decay, low=0.0)
        _number("beta1", self.beta1, low=0.0, high=1.0, high_open=True)
        _number("beta2", self.beta2, low=0.0, high=1.0, high_open=True)
        _number("eps", self.eps, low=0.0, low_open=True)
        _number("grad_clip", self.grad_clip, low=0.0)
        _number("cooldown", self.cooldown, low=0.0, high=1.0)
        _number("average_window", self.average_window, low=0.0, high=1.0, low_open=True)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.average not in AVERAGES:
            raise ValueError(f"average must be one of {list(AVERAGES)}, got {self.average!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.compile is not None and not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true, false or null (auto), got {self.compile!r}")
        if not isinstance(self.autocast, bool):
            raise ValueError(f"autocast must be true or false, got {self.autocast!r}")
        if self.crash_once_marker is not None and not isinstance(self.crash_once_marker, str):
            raise ValueError(f"crash_once_marker must be a file path or None, got {self.crash_once_marker!r}")

    @property
    def steps(self) -> int:
        """Training steps: whole batches that fit in `tokens`."""
        return self.tokens // (self.batch_size * self.seq_len)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def shortened(self, fraction: float) -> "ProxySpec":
        """This recipe on `fraction` of its training tokens, in whole steps (at least one); the
        schedule fits the shorter length (a multi-fidelity study's short runs)."""
        steps = max(1, int(self.steps * fraction))
        return dataclasses.replace(self, tokens=steps * self.tokens_per_step)

    @property
    def average_steps(self) -> int:
        """The averaging window in steps: round(average_window * steps), at least 1."""
        return max(1, min(self.steps, int(round(self.average_window * self.steps))))


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _number(name: str, value: Any, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
