"""Small neural building blocks shared by the sequential models (not part of the public API).

:func:`dropout` draws its keep-mask from ``torch.rand_like`` instead of ``bernoulli_``: on CPU
that is about 2.5× faster for the activation sizes of these models (``bernoulli_`` took a third of
a SASRec training step), with the same distribution and the same global-seed determinism.
:class:`SelfAttentionBlock` is a pre-LayerNorm transformer block (as ``nn.TransformerEncoderLayer``
with ``norm_first=True``) built on ``scaled_dot_product_attention`` with a boolean mask, so that
no ``[B·heads, T, T]`` float mask is materialised per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1−p)."""
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = torch.rand_like(x) >= p
    return x * keep * (1.0 / (1.0 - p))


class PreLNBlock(nn.Module):
    """The layers of a pre-LN Transformer block — LN, a fused QKV projection, the output
    projection, LN and a two-layer feed-forward network of width ``ff_dim`` — and its tail
    (:meth:`residual_ffn`); subclasses compute the attention between them."""

    def __init__(
        self, dim: int, n_heads: int, ff_dim: int, p: float, activation: str = "relu"
    ) -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu' (got {activation!r})")
        self.act = F.relu if activation == "relu" else F.gelu
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.p = p
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff_dim)
        self.ff2 = nn.Linear(ff_dim, dim)

    def residual_ffn(self, x: Tensor, a: Tensor) -> Tensor:
        """``x + Dropout(out(a))`` for the heads' output ``a`` ``[B, T, d]``, then
        ``+ Dropout(FFN(LN(·)))``."""
        x = x + dropout(self.out(a), self.p, self.training)
        f = dropout(self.act(self.ff1(self.norm2(x))), self.p, self.training)
        return x + dropout(self.ff2(f), self.p, self.training)


class SelfAttentionBlock(PreLNBlock):
    """``x + Dropout(MHA(LN(x)))`` then ``x + Dropout(FFN(LN(x)))`` with a feed-forward network
    of width ``ff_dim`` and ``activation`` ReLU (SASRec §III-B/C) or GELU (BERT4Rec §3.3);
    dropout also on the attention weights and inside the FFN, as in
    ``nn.TransformerEncoderLayer``."""

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x`` ``[B, T, d]``; ``allowed`` bool ``[B, 1, T, T]`` (True: query may see key)."""
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.p if self.training else 0.0
        )
        return self.residual_ffn(x, a.transpose(1, 2).reshape(b, t, d))


def causal_mask(pad: Tensor) -> Tensor:
    """``[B, 1, T, T]`` bool: query ``i`` sees keys ``j ≤ i`` that are not padding, and always
    itself (a left-padding query then sees only itself: finite, and never read)."""
    t = pad.shape[1]
    ones = torch.ones(t, t, dtype=torch.bool, device=pad.device)
    allowed = torch.tril(ones).unsqueeze(0) & ~pad.unsqueeze(1)
    allowed = allowed | torch.eye(t, dtype=torch.bool, device=pad.device).unsqueeze(0)
    return allowed.unsqueeze(1)


def padding_mask(pad: Tensor) -> Tensor:
    """``[B, 1, T, T]`` bool for bidirectional attention: every query sees every key that is not
    padding, and always itself (a padding query sees the real keys too: finite, never read)."""
    t = pad.shape[1]
    allowed = (~pad).unsqueeze(1).expand(-1, t, -1)
    allowed = allowed | torch.eye(t, dtype=torch.bool, device=pad.device).unsqueeze(0)
    return allowed.unsqueeze(1)


def sinusoid_positions(n: int, width: int, period_dim: int | None = None) -> Tensor:
    """``[n, width]`` sinusoidal encoding of positions 0..n−1 (Vaswani et al. 2017): sin at
    even, cos at odd dimensions j of position / 10000^(2⌊j/2⌋ / period_dim), ``period_dim``
    defaulting to ``width`` (the Transformer's). KHGT's time embedding is twice as wide as its
    frequencies' ``period_dim`` = d."""
    dim = width if period_dim is None else period_dim
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    j = torch.arange(width)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).float() / dim)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))


__all__ = ["SelfAttentionBlock", "causal_mask", "dropout", "padding_mask", "sinusoid_positions"]
