"""BEHRT's Transformer encoder: BERT post-LayerNorm layers written for speed on short, padded sequences.

Parameter names and shapes are exactly those of transformers' ``BertEncoder`` (``layer.{i}.attention.self.query``
... ``layer.{i}.output.LayerNorm``), so weights saved by either load into the other; in eval mode the two give
the same outputs (``tests/test_behrt_speed.py`` compares them). What differs is how the work is done:

- one fused Q/K/V projection per layer instead of three;
- the last layer computes the queries of the tokens a head reads only (the pooled token for CLS or last-token
  pooling, the masked tokens in pretraining); their keys and values still come from every token;
- attention through ``torch.nn.functional.scaled_dot_product_attention`` with a boolean key-padding mask
  (B, 1, 1, L), not a materialised (B, 1, L, L) additive mask, in eval mode and in training with
  ``attention_probs_dropout_prob`` 0; in CPU training with attention dropout, or under bfloat16 autocast, the
  same product written out, with :func:`fast_dropout` on the probabilities (SDPA's CPU kernels have no dropout,
  and their bfloat16 backward is slow; see :func:`attention`);
- dropout on CPU from 16-bit random draws, four per 64-bit draw (:func:`fast_dropout`): torch's CPU dropout
  draws one Bernoulli per element, which is most of a small model's training step. Each element is kept with
  probability ``1 - round(p * 65536) / 65536`` (within 1e-5 of ``1 - p``) and scaled by ``1 / (1 - p)``.
  On other devices ``F.dropout`` is used (their kernels are fast).

Padded keys get no attention weight, so appending PAD tokens leaves every real token's output unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.activations import ACT2FN

_I16_OFFSET = 32768  # int16 draws lie in [-32768, 32767]


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout like ``F.dropout(x, p, training)``; on CPU from 16-bit draws (see the module doc)."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # full 64-bit range
    bits = draws.view(torch.int16)[:n].view(x.shape)
    keep = bits >= round(p * 65536) - _I16_OFFSET
    if x.dtype in (torch.bfloat16, torch.float16):  # bool -> bf16 is slow on the CPU, uint8 -> bf16 is not
        keep = keep.view(torch.uint8)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


# Under bf16 autocast on the CPU oneDNN builds (and caches) a kernel per new matrix shape, about a millisecond
# each: sequence lengths, masked-query counts and masked-token rows are padded to these multiples, so few recur.
SHAPE_MULTIPLE = 8
ROW_MULTIPLE = 64


def lowp_autocast(device: torch.device) -> bool:
    """Whether a bfloat16 / float16 autocast region is active for ``device``'s type (see ``train.precision``)."""
    return device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type)


def _pad_len(t: torch.Tensor, value: float) -> torch.Tensor:
    extra = -t.shape[1] % SHAPE_MULTIPLE
    return F.pad(t, (0, extra), value=value) if extra else t


def pad_lengths(ids: dict[str, torch.Tensor], attention_mask: torch.Tensor, value_num: torch.Tensor | None
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """(B, L) inputs right-padded with zeros (PAD, no attention, no value) to L a multiple of SHAPE_MULTIPLE;
    padded keys get no attention weight, so the real tokens' outputs are unchanged."""
    return ({k: _pad_len(v, 0) for k, v in ids.items()}, _pad_len(attention_mask, 0),
            None if value_num is None else _pad_len(value_num, 0.0))


def query_count(q: int, L: int, device: torch.device) -> int:
    """``q`` masked queries per row; under low-precision autocast rounded up so that ``q + 1`` (with the pooled
    token) is a multiple of SHAPE_MULTIPLE, at most ``L``."""
    if not lowp_autocast(device):
        return q
    return min(-(-(q + 1) // SHAPE_MULTIPLE) * SHAPE_MULTIPLE, L + 1) - 1


def padded_rows(fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for (n, H) rows; under low-precision autocast computed on rows zero-padded to a multiple of
    ROW_MULTIPLE (n changes every step), the padded rows dropped again."""
    n = x.shape[0]
    if not lowp_autocast(x.device) or n % ROW_MULTIPLE == 0:
        return fn(x)
    return fn(F.pad(x, (0, 0, 0, -n % ROW_MULTIPLE)))[:n]


class FastDropout(nn.Module):
    """``nn.Dropout`` with :func:`fast_dropout`'s CPU path; no parameters."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout of ``x`` in training mode; ``x`` unchanged in eval mode."""
        return fast_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        """The drop probability, for the module's repr."""
        return f"p={self.p}"


class _Projections(nn.Module):
    def __init__(self, H: int) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)


class _DenseNorm(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm (BERT's SelfOutput and Output blocks)."""

    def __init__(self, d_in: int, H: int, eps: float, p: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, H)
        self.LayerNorm = nn.LayerNorm(H, eps=eps)
        self.dropout = FastDropout(p)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = _Projections(c.hidden_size)
        self.output = _DenseNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps, c.hidden_dropout_prob)


class _Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class BehrtLayer(nn.Module):
    """One BERT layer: self-attention block, then feed-forward block, each with residual + LayerNorm."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.n_heads, self.p_attn = c.num_attention_heads, float(c.attention_probs_dropout_prob)
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.act = ACT2FN[c.hidden_act]
        self.output = _DenseNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps, c.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, query_index: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x (B, L, H); key_mask (B, 1, 1, L) bool, True where the key is a real token -> (B, L, H).

        With ``query_index`` (B, Q) int64 only those tokens of each row are computed (their keys and values are
        still every token's): (B, Q, H), equal to the full output's rows ``query_index``.
        """
        B, L, H = x.shape
        nh, dh, proj = self.n_heads, H // self.n_heads, self.attention.self
        if query_index is None:
            xq = x
            w = torch.cat([proj.query.weight, proj.key.weight, proj.value.weight])
            b = torch.cat([proj.query.bias, proj.key.bias, proj.value.bias])
            q, k, v = F.linear(x, w, b).view(B, L, 3, nh, dh).permute(2, 0, 3, 1, 4)
        else:
            xq = x[torch.arange(B, device=x.device)[:, None], query_index]  # (B, Q, H)
            q = proj.query(xq).view(B, -1, nh, dh).transpose(1, 2)
            w = torch.cat([proj.key.weight, proj.value.weight])
            b = torch.cat([proj.key.bias, proj.value.bias])
            k, v = F.linear(x, w, b).view(B, L, 2, nh, dh).permute(2, 0, 3, 1, 4)
        Lq = xq.shape[1]
        ctx = attention(q, k, v, key_mask, self.p_attn if self.training else 0.0).transpose(1, 2).reshape(B, Lq, H)
        h = self.attention.output(ctx, xq)
        return self.output(self.act(self.intermediate.dense(h)), h)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + key mask) v with dropout ``p`` on the probabilities: (B, nh, Lq, d).

    ``key_mask`` (B, 1, 1, L) bool, True for real keys. Without dropout (``p`` 0: eval mode, or a model with
    ``attention_probs_dropout_prob`` 0) SDPA's fused kernel, forward and backward; on the CPU the product written
    out, with :func:`fast_dropout`, where there is dropout (SDPA's CPU kernels have none: a slow fallback) and
    where a bfloat16 / float16 product needs gradients (SDPA's low-precision CPU backward is slower there:
    benchmarks/results/behrt_speed.md).
    """
    if q.device.type == "cpu" and (p > 0.0 or (q.requires_grad and q.dtype in (torch.bfloat16, torch.float16))):
        scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)  # (B, nh, Lq, L)
        probs = scores.add_(_key_bias(key_mask, scores.dtype)).softmax(-1)  # in place: nothing saved
        return fast_dropout(probs, p) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)


def _key_bias(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, 1, L) additive mask: 0 for real keys, -inf for padded ones."""
    return torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device).masked_fill_(~key_mask, float("-inf"))


class BehrtEncoder(nn.Module):
    """A stack of :class:`BehrtLayer`; ``forward(hidden (B, L, H), attention_mask (B, L)) -> (B, L, H)``."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.config = c
        self.layer = nn.ModuleList(BehrtLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, query_index: torch.Tensor | None = None
                ) -> torch.Tensor:
        """(B, L, H); with ``query_index`` (B, Q) the final states of those tokens of each row only, (B, Q, H):
        the last layer then computes Q queries per row (what a pooled or masked-token head reads), not L."""
        key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            hidden = layer(hidden, key_mask, query_index if i == last else None)
        if query_index is not None and not len(self.layer):
            return hidden[torch.arange(len(hidden))[:, None], query_index]
        return hidden
