"""Weight averaging over the end of training: the weights a proxy is scored with when
spec.average is "tail" or "ema" (workers/spec.py).

    average = WeightAverage(spec)
    for step in range(spec.steps):
        ...one optimizer step...
        average.update(step, weights)      # a pack's (P, N) buffer, or one model's flat parameters
    evaluate with average.value

Averaging the last iterates (Polyak-Ruppert; "latest weight averaging" in LM pretraining) removes
most of the jitter that the last updates leave in the weights. That jitter differs from proxy to
proxy, so in a study it reads as seed noise between mixtures.
"""

from __future__ import annotations

import torch

from workers.spec import ProxySpec


class WeightAverage:
    """The averaged weights of spec.average, kept beside training: `update(step, weights)` after
    every step, `value` the average so far (None until the window starts).

    tail: the running mean of the weights after each of the last spec.average_steps steps (Polyak
    averaging of the latest iterates, as LAWA). ema: e <- e + (w - e) / average_steps after every
    step, from the weights after the first step. Works on any tensor: a pack's (P, N) buffer, or
    one model's flattened parameters."""

    def __init__(self, spec: ProxySpec):
        self.kind, self.window, self.steps = spec.average, spec.average_steps, spec.steps
        self.value: torch.Tensor | None = None
        self.count = 0

    @torch.no_grad()
    def update(self, step: int, weights: torch.Tensor) -> None:
        if self.kind == "none" or (self.kind == "tail" and step < self.steps - self.window):
            return
        if self.value is None:
            self.value, self.count = weights.detach().clone(), 1
            return
        self.count += 1
        rate = 1.0 / self.count if self.kind == "tail" else 1.0 / self.window
        self.value.lerp_(weights, rate)
