"""The proxy language model: a small LLaMA-style GPT, once as one model and once as a pack of P.

Architecture (both classes compute exactly this function):

    x = tok_emb[idx]                                       (no position embedding: rotary instead)
    for each of n_layer blocks:
        h = rms_norm(x) * attn_norm                        RMSNorm with a gain, no bias
        q, k, v = split(h @ qkv^T);  q, k = rotary(q), rotary(k)
        x = x + causal_attention(q, k, v) @ proj^T
        h = rms_norm(x) * mlp_norm
        gate, up = split(h @ up^T)
        x = x + (silu(gate) * up) @ down^T                 SwiGLU
    logits = (rms_norm(x) * norm) @ head^T                 untied head (as LLaMA and RegMix)

No biases, no dropout. Untied embeddings keep the input lookup free of matmul FLOPs and match the
RegMix/TinyLlama proxies; at byte vocabulary they cost 7% of the 0.5M parameters.

`GPT` is the plain one-model nn.Module (nanoGPT style), used for unpacked training and as the
reference in tests. `PackedGPT` holds the parameters of P independent models stacked along a
leading proxy dimension, all in one flat (P, N) buffer, and runs them as one batched computation
(batched matmuls over the proxy dimension, one attention call over P * batch sequences). Proxies
never mix: every reduction is per proxy, so one proxy's NaN cannot reach another.

Both classes are initialised from `init_state(cfg, seed)`, so a proxy's initial weights depend on
its seed only: proxies with the same seed start from the same point (common random numbers).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from workers.presets import ModelConfig

INIT_STD = 0.02


def param_layout(cfg: ModelConfig) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, shape, weight_decay) of every parameter, in GPT.state_dict() naming.

    Decayed parameters (matrices and embeddings) come first, then the norm gains, so that the
    packed optimizer applies weight decay to one leading slice of the flat buffer."""
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    matrices = [("tok_emb.weight", (v, d))]
    gains = []
    for i in range(cfg.n_layer):
        matrices += [
            (f"blocks.{i}.attn.qkv.weight", (3 * d, d)),
            (f"blocks.{i}.attn.proj.weight", (d, d)),
            (f"blocks.{i}.mlp.up.weight", (2 * f, d)),    # gate and up projections, stacked
            (f"blocks.{i}.mlp.down.weight", (d, f)),
        ]
        gains += [(f"blocks.{i}.attn_norm.weight", (d,)), (f"blocks.{i}.mlp_norm.weight", (d,))]
    matrices.append(("head.weight", (v, d)))
    gains.append(("norm.weight", (d,)))
    return [(name, shape, True) for name, shape in matrices] + [(name, shape, False) for name, shape in gains]


def init_state(cfg: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Initial weights of one model (fp32, on CPU), a function of the seed only.

    Matrices ~ N(0, 0.02); the residual output projections (attn.proj, mlp.down) scaled by
    1/sqrt(2 n_layer) as in GPT-2; norm gains 1."""
    generator = torch.Generator().manual_seed(int(seed))
    state = {}
    for name, shape, _ in param_layout(cfg):
        if len(shape) == 1:
            state[name] = torch.ones(shape)
            continue
        std = INIT_STD / math.sqrt(2 * cfg.n_layer) if name.endswith(("proj.weight", "down.weight")) else INIT_STD
        state[name] = torch.randn(shape, generator=generator) * std
    return state


def rotary_tables(cfg: ModelConfig, seq_len: int, device=None) -> torch.Tensor:
    """cos and sin of the angles t theta_j for positions t < seq_len and pairs j < head_dim / 2,
    theta_j = rope_base^(-2j / head_dim): (seq_len, head_dim / 2, 2) fp32, the last dim (cos, sin)
    (the layout of a complex number, so that rotary() can view it as e^(i t theta_j))."""
    half = cfg.head_dim // 2
    theta = 1.0 / cfg.rope_base ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), theta)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).float().to(device)


def rotary(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotary positions: rotate each pair (x[2j], x[2j+1]) of the last dim (head_dim) by the angle
    t theta_j (as in Meta's LLaMA code). `rotations` (rotary_tables, possibly reshaped) must
    broadcast against x with its last dim split in pairs."""
    pairs = x.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():  # real arithmetic, which inductor fuses into one kernel
        (a, b), (cos, sin) = pairs.unbind(-1), rotations.unbind(-1)
        rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    else:  # eager: one complex multiplication is the fastest way
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rotations))
    return rotated.flatten(-2).type_as(x)


class _UnitRMSNorm(torch.autograd.Function):
    """rms_norm(x) without a gain, with a backward of two fused passes instead of autograd's
    chain of elementwise ops: y = x r with r = (mean(x^2) + eps)^-1/2, dx = r (dy - y mean(dy y))."""

    @staticmethod
    def forward(ctx, x, eps: float):
        r = torch.rsqrt(torch.linalg.vecdot(x, x).unsqueeze(-1).div_(x.shape[-1]).add_(eps))
        y = x * r
        ctx.save_for_backward(y, r)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, r = ctx.saved_tensors
        minus_mean = torch.linalg.vecdot(dy, y).unsqueeze(-1).div_(-y.shape[-1])
        return torch.addcmul(dy, y, minus_mean).mul_(r), None


def unit_rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without a gain (the packed model folds gains into the next matrix)."""
    if torch.is_autocast_enabled(x.device.type):  # let autocast pick the precision
        return F.rms_norm(x, (x.shape[-1],), None, eps)
    return _UnitRMSNorm.apply(x, eps)


# --------------------------------------------------------------------------------------------
# One model (nanoGPT style)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, rotations):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).transpose(1, 3).unbind(dim=2)
        q, k = rotary(q, rotations), rotary(k, rotations)        # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, 2 * cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, rotations):
        x = x + self.attn(self.attn_norm(x), rotations)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """One LLaMA-style GPT. forward(idx (B, T), targets (B, T)) -> mean cross-entropy in nats."""

    def __init__(self, cfg: ModelConfig, seed: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._rotations: torch.Tensor | None = None
        if seed is not None:
            self.load_state_dict(init_state(cfg, seed))

    def rotations(self, T: int, device) -> torch.Tensor:
        if self._rotations is None or len(self._rotations) < T or self._rotations.device != device:
            self._rotations = rotary_tables(self.cfg, T, device)
        return self._rotations[:T]

    def forward(self, idx, targets=None, reduction: str = "mean"):
        rotations = self.rotations(idx.shape[1], idx.device)
        x = self.tok_emb(idx)
        for block in self.blocks:
            x = block(x, rotations)
        logits = self.head(self.norm(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)


# --------------------------------------------------------------------------------------------
# P models as one computation


@torch.compiler.disable
def packed_lookup(tables: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(P, B, T, d): proxy p's rows of its own table (P, vocab, d) for its tokens idx[p] (P, B, T).

    One lookup per proxy, so that the backward accumulates each proxy's rows on their own, in
    token order: the same bits whatever else is packed with it, run after run. One indexing over the
    stacked tables accumulated in an order that varied with P, and compiled (scatter-add kernels
    that race between threads) in an order that varied from run to run; training amplified those
    last-bit differences to a few thousandths of a nat. It stays out of torch.compile for that."""
    return torch.stack([F.embedding(idx[p], tables[p]) for p in range(len(tables))])


@torch.compiler.disable
def proxy_means(values: torch.Tensor) -> torch.Tensor:
    """(P,) row means of (P, n), outside torch.compile: compiled, a reduction over few rows is split
    between threads in a way that depends on the number of rows, so a proxy's loss would depend on
    the pack's size."""
    return values.mean(dim=1)


class PackedGPT:
    """P independent GPTs with their weights stacked in one flat (P, N) fp32 buffer.

    `self.params[name]` is a (P, *shape) view of `self.data`, and a leaf that requires grad;
    `loss(idx, targets)` returns the (P,) mean losses; `backward` writes d(sum of losses)/d(data)
    into the (P, N) buffer `self.grad` (each proxy's row holds its own gradient, since the proxies
    do not interact). The optimizer in workers/proxies.py (PackedTrainer) works on these two buffers.

    The math is GPT's with two rewrites that are exact in real arithmetic: a norm gain g feeding a
    matrix W is applied as the matrix W * g (a weight-sized op instead of an activation-sized one),
    and residual additions are fused into the output matmuls (baddbmm).
    """

    def __init__(self, cfg: ModelConfig, states: list[dict[str, torch.Tensor]], device="cpu"):
        self.cfg = cfg
        self.P = len(states)
        self.layout = param_layout(cfg)
        sizes = [math.prod(shape) for _, shape, _ in self.layout]
        self.N = sum(sizes)
        self.n_decay = sum(size for size, (_, _, decay) in zip(sizes, self.layout) if decay)
        self.data = torch.cat(
            [torch.stack([s[name].reshape(-1).float() for s in states]) for name, _, _ in self.layout], dim=1
        ).to(device)
        self.grad = torch.zeros_like(self.data)
        self.params: dict[str, torch.Tensor] = {}
        offset = 0
        for (name, shape, _), size in zip(self.layout, sizes):
            view = self.data[:, offset : offset + size].view(self.P, *shape)
            self.params[name] = view.requires_grad_()
            offset += size
        self._rotations: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.data.device

    def state(self, p: int) -> dict[str, torch.Tensor]:
        """Proxy p's weights as a GPT state dict (copies, on CPU)."""
        return {name: view[p].detach().cpu().clone() for name, view in self.params.items()}

    def rotations(self, T: int) -> torch.Tensor:
        if self._rotations is None or len(self._rotations) < T:
            self._rotations = rotary_tables(self.cfg, T, self.device)
        return self._rotations[:T]

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (P, B, T) token ids -> logits (P, B * T, vocab)."""
        cfg, w = self.cfg, self.params
        P, B, T = idx.shape
        H, hd, d = cfg.n_head, cfg.head_dim, cfg.d_model
        rotations = self.rotations(T).view(T, 1, 1, hd // 2, 2)    # broadcast over (q or k, head)

        def norm(x):  # the gain is folded into the next matrix
            return unit_rms_norm(x, cfg.norm_eps)

        def gained(matrix, gain):  # (P, out, in) * (P, 1, in), transposed for x @ W^T
            return (matrix * gain.unsqueeze(1)).transpose(1, 2)

        x = packed_lookup(w["tok_emb.weight"], idx).view(P, B * T, d)
        for i in range(cfg.n_layer):
            pre = f"blocks.{i}."
            h = norm(x)
            qkv = gained(w[pre + "attn.qkv.weight"], w[pre + "attn_norm.weight"])          # (P, d, 3d)
            # separate products for (q, k) and v: slicing weights is cheap, slicing activations
            # would cost an activation-sized zero-fill and copy in the backward pass
            qk = torch.bmm(h, qkv[:, :, : 2 * d]).view(P * B, T, 2, H, hd)
            v = torch.bmm(h, qkv[:, :, 2 * d :]).view(P * B, T, H, hd)
            q, k = rotary(qk, rotations).unbind(2)               # q and k rotated in one pass
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            y = y.transpose(1, 2).reshape(P, B * T, d)           # (P * B, H, T, hd) -> (P, B * T, d)
            x = torch.baddbmm(x, y, w[pre + "attn.proj.weight"].transpose(1, 2))   # x + y @ proj^T
            h = norm(x)
            up = gained(w[pre + "mlp.up.weight"], w[pre + "mlp_norm.weight"])            # (P, d, 2f)
            gate, up = torch.bmm(h, up[:, :, : cfg.d_ff]), torch.bmm(h, up[:, :, cfg.d_ff :])
            x = torch.baddbmm(x, F.silu(gate) * up, w[pre + "mlp.down.weight"].transpose(1, 2))
        return torch.bmm(norm(x), gained(w["head.weight"], w["norm.weight"]))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats per token) of each proxy on its own batch: (P,)."""
        logits = self.logits(idx)
        P = logits.shape[0]
        per_token = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        return proxy_means(per_token.view(P, -1))

    def backward(self, losses: torch.Tensor) -> None:
        """Gradients of every proxy's loss with respect to its own weights, into self.grad."""
        names = list(self.params)
        grads = torch.autograd.grad(losses.sum(), [self.params[n] for n in names])
        torch.cat([g.reshape(self.P, -1) for g in grads], dim=1, out=self.grad)
