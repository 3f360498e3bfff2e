"""One training step and one evaluation of a single GPT: what a proxy trained on its own
(train_proxies(packed=False)) and the large run (mixopt/large_run/loop.py) both do.

    optimizer = adamw(model, cfg, lr, weight_decay, (beta1, beta2), eps)
    loss, norm = train_step(model, optimizer, windows, lr * lr_factor(step, steps, recipe), grad_clip)
    losses = evaluate(model, held_out, batch_size)          # {domain: nats per token}

A step sets the learning rate, runs the forward (under bf16 autocast on cuda when asked), the
backward, clips the gradient norm to `grad_clip` (0: none) and takes the AdamW step, with decoupled
weight decay on matrices and embeddings and none on norm gains. A step whose loss or gradient norm
is not finite changes no parameter: the caller decides what divergence means (a proxy is frozen and
reported, the large run stops). The packed trainer (workers/proxies.py: PackedTrainer) is the same
arithmetic over many proxies at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch

from workers.model import GPT, param_layout
from workers.presets import ModelConfig


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if visible else cpu; "cuda" without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available here")
    return torch.device(name)


def to_device(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(batch)
    if device.type == "cuda":  # pinned host memory (cached by torch) and an asynchronous copy
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on cuda when enabled; nothing on cpu."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def lr_factor(step: int, steps: int, recipe) -> float:
    """Learning rate of `step` (0-based) as a fraction of the peak. `recipe`: anything with
    `warmup`, `schedule` and `final_lr` (a ProxySpec, or the model section of `mixopt train`'s
    config), and `cooldown` for "wsd". Every decaying schedule reaches final_lr at the last step;
    wsd with a cooldown that spans all the steps after warmup is the linear schedule."""
    warmup = int(round(recipe.warmup * steps))
    if step < warmup:
        return (step + 1) / warmup
    if recipe.schedule == "constant":
        return 1.0
    if recipe.schedule == "wsd":
        decay_start = max(warmup, steps - int(round(recipe.cooldown * steps)))
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, steps - 1 - decay_start)
        return 1.0 - (1.0 - recipe.final_lr) * progress
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    if recipe.schedule == "linear":
        return 1.0 - (1.0 - recipe.final_lr) * progress
    return recipe.final_lr + (1.0 - recipe.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw(model: GPT, cfg: ModelConfig, lr: float, weight_decay: float, betas: tuple[float, float],
          eps: float) -> torch.optim.AdamW:
    """AdamW over the model's parameters: weight decay on matrices and embeddings, none on norm gains."""
    decay = {name for name, _, is_decayed in param_layout(cfg) if is_decayed}
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def train_step(model: GPT, optimizer: torch.optim.Optimizer, windows: torch.Tensor, lr: float, grad_clip: float,
               forward: Callable | None = None, bf16: bool = True) -> tuple[float, float]:
    """One step on windows (B, seq_len + 1): (training loss, gradient norm before clipping).

    forward: the model's forward to call (a torch.compile'd one; default the model). When the
    loss or the norm is not finite, the parameters are left as they were."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(windows.device, bf16):
        loss = (forward or model)(windows[:, :-1], windows[:, 1:])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    loss_value, norm_value = loss.item(), norm.item()
    if math.isfinite(loss_value) and math.isfinite(norm_value):
        optimizer.step()
    return loss_value, norm_value


@torch.no_grad()
def evaluate(model: GPT, held_out: dict[str, np.ndarray], batch_size: int, device: torch.device | None = None,
             bf16: bool = True) -> dict[str, float]:
    """Mean loss (nats per token) of the model on every domain's held-out windows."""
    device = device or torch.device("cpu")
    model.eval()
    out = {}
    for domain, windows in held_out.items():
        total = 0.0
        for start in range(0, len(windows), batch_size):
            chunk = to_device(windows[start : start + batch_size], device)
            with autocast(device, bf16):
                total += float(model(chunk[:, :-1], chunk[:, 1:], reduction="sum"))
        out[domain] = total / (windows.shape[0] * (windows.shape[1] - 1))
    model.train()
    return out
