"""Transformer zoo modules: a BERT-base-shaped encoder, a GPT-2-small-shaped decoder and a tiny transformer.

Shapes follow Devlin et al. 2018 (arXiv:1810.04805, BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072,
vocabulary 30522, 512 positions, post-LayerNorm, erf GELU) and Radford et al. 2019 (GPT-2 small: 12 layers,
hidden 768, 12 heads, FFN 3072, vocabulary 50257, 1024 positions, pre-LayerNorm, tanh GELU, causal mask).
Attention is written as explicit MatMuls (Q·Kᵀ, Softmax, ·V) so each one is a visible ONNX MatMul; there is
no pooler, classifier or LM head, so the MACs are those of the encoder/decoder stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["TransformerConfig", "Transformer", "BERT_BASE", "GPT2_SMALL", "TINY"]


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and style of a transformer stack."""

    vocab: int
    max_positions: int
    hidden: int
    heads: int
    ffn: int
    layers: int
    causal: bool  # mask future positions (decoder)
    pre_ln: bool  # LayerNorm before each sublayer plus a final one (GPT-2) instead of after (BERT)
    fused_qkv: bool  # one Linear producing Q, K and V, then split (GPT-2's c_attn)
    gelu: str  # "none" (erf GELU) or "tanh" (GPT-2's approximation)


BERT_BASE = TransformerConfig(vocab=30522, max_positions=512, hidden=768, heads=12, ffn=3072, layers=12,
                              causal=False, pre_ln=False, fused_qkv=False, gelu="none")
GPT2_SMALL = TransformerConfig(vocab=50257, max_positions=1024, hidden=768, heads=12, ffn=3072, layers=12,
                               causal=True, pre_ln=True, fused_qkv=True, gelu="tanh")
TINY = TransformerConfig(vocab=128, max_positions=32, hidden=32, heads=2, ffn=64, layers=2,
                         causal=True, pre_ln=False, fused_qkv=False, gelu="none")


class Attention(nn.Module):
    """Multi-head self-attention with explicit MatMuls: softmax(Q·Kᵀ / sqrt(d) [+ causal mask]) · V."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        self.causal = cfg.causal
        if cfg.fused_qkv:
            self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        else:
            self.q = nn.Linear(cfg.hidden, cfg.hidden)
            self.k = nn.Linear(cfg.hidden, cfg.hidden)
            self.v = nn.Linear(cfg.hidden, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)
        n = cfg.max_positions
        self.register_buffer("future", torch.triu(torch.ones(n, n, dtype=torch.bool), 1), persistent=False)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, hidden = x.shape
        if hasattr(self, "qkv"):
            q, k, v = self.qkv(x).split(hidden, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        if self.causal:
            scores = scores.masked_fill(self.future[:s, :s], float("-inf"))
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(context.transpose(1, 2).reshape(b, s, hidden))


class Block(nn.Module):
    """Attention and feed-forward sublayers with residual connections, pre- or post-LayerNorm."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.pre_ln = cfg.pre_ln
        self.attn = Attention(cfg)
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.ffn = nn.Sequential(nn.Linear(cfg.hidden, cfg.ffn), nn.GELU(approximate=cfg.gelu),
                                 nn.Linear(cfg.ffn, cfg.hidden))
        self.ln2 = nn.LayerNorm(cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.attn(self.ln1(x))
            return x + self.ffn(self.ln2(x))
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.ffn(x))


class Transformer(nn.Module):
    """Token embeddings (Gather on int64 ids) + learned position embeddings, then the block stack."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.positions = nn.Embedding(cfg.max_positions, cfg.hidden)
        # BERT normalises the embeddings; GPT-2 (pre-LN) normalises the stack's output instead.
        self.ln = nn.LayerNorm(cfg.hidden)
        self.pre_ln = cfg.pre_ln
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.register_buffer("position_ids", torch.arange(cfg.max_positions), persistent=False)
        self._init()

    def _init(self) -> None:
        """N(0, 0.02) weights as in BERT and GPT-2; biases and LayerNorm beta N(0, 0.02), gamma N(1, 0.02).

        The small noise on biases and LayerNorm parameters (instead of exact 0 and 1) keeps every parameter
        tensor distinct, so the exporter does not merge them into shared initializers behind Identity nodes.
        """
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.bias, 0.0, 0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.normal_(m.bias, 0.0, 0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        s = input_ids.shape[1]
        x = self.tokens(input_ids) + self.positions(self.position_ids[:s])
        if not self.pre_ln:
            x = self.ln(x)
        for block in self.blocks:
            x = block(x)
        return self.ln(x) if self.pre_ln else x
