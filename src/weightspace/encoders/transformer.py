"""A non-equivariant transformer baseline on chunks of the flat weight vector."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import GraphBatch
from ._base import check_prepared
from ._registry import EncoderConfigError, register_encoder
from .flat import FlatEncoder, Standardize


class PreNormBlock(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``.

    Written out (rather than ``nn.TransformerEncoderLayer``) so that eval mode takes no
    fast path with different numerics.

    Args:
        d_model: token width.
        heads: attention heads (must divide ``d_model``).
        dropout: dropout on attention weights and after the feed-forward layers.
    """

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )

    def _attention(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # [B, H, T, d / H]
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # [B, H, T, d / H]
        return self.proj(out.transpose(1, 2).reshape(b, t, d))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, T, d_model]`` -> ``[B, T, d_model]``."""
        x = x + self._attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))


@register_encoder("transformer")
class FlatTransformerEncoder(FlatEncoder):
    """A transformer over chunks of the standardised flat weight vector (not invariant).

    The vector is cut into ``length / chunk`` tokens, each linearly embedded and given a
    learned positional embedding; a CLS token's output is projected to the embedding.

    Args:
        length: flat vector length (networks are zero-padded or truncated to it).
        chunk: values per token (must divide ``length``).
        d_model: token width.
        layers: transformer blocks.
        heads: attention heads.
        dropout: dropout inside the blocks.
        out_dim: embedding width.
    """

    def __init__(
        self,
        length: int = 8192,
        chunk: int = 64,
        d_model: int = 64,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
        out_dim: int = 256,
    ) -> None:
        if length % chunk or d_model % heads:
            raise EncoderConfigError(
                f"encoder 'transformer' needs chunk | length and heads | d_model, got "
                f"length={length}, chunk={chunk}, d_model={d_model}, heads={heads}"
            )
        super().__init__(length)
        self.chunk = chunk
        self.out_dim = out_dim
        self.standardize = Standardize(length)
        self.embed = nn.Linear(chunk, d_model)
        self.position = nn.Parameter(torch.randn(length // chunk, d_model) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.blocks = nn.ModuleList(PreNormBlock(d_model, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_dim)

    def fit(self, batches: Iterable[GraphBatch]) -> FlatTransformerEncoder:
        """Set the per-position mean and std of the training flat vectors."""
        self.standardize.fit(self.fit_inputs(batches))
        return self

    def forward(self, batch: GraphBatch) -> Tensor:
        """``[B, out_dim]`` embeddings."""
        check_prepared(batch, self.name)
        x = self.standardize(self.flat(batch))
        tokens = self.embed(x.view(len(x), -1, self.chunk)) + self.position  # [B, T, d_model]
        x = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)  # [B, 1 + T, d_model]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))
