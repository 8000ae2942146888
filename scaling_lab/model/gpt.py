"""A GPT-style decoder-only transformer, readable top to bottom.

Pre-norm blocks, causal scaled_dot_product_attention, GELU MLP, no biases, learned positions, token embedding
tied to the output layer (Press & Wolf 2017). Parameter counts are pinned in scaling_lab/accounting.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scaling_lab.model import mup
from scaling_lab.model.config import ModelConfig
from scaling_lab.model.fused_loss import linear_cross_entropy


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.scale = mup.attention_scale(cfg)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln_mlp = nn.LayerNorm(cfg.d_model, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        self.output_mult = mup.output_multiplier(cfg)
        self.apply(self._init_weights)
        # GPT-2 (Radford et al. 2019, Sec. 2.3): scale residual-branch outputs by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        with torch.no_grad():  # μP: rescaling after the draw leaves the standard init's random stream untouched
            for name, p in self.named_parameters():
                if mup.is_hidden(name, p):
                    p.mul_(mup.hidden_std(cfg, 1.0))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-LayerNorm hidden states of shape (B, T, d_model): what the output layer reads."""
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, T, vocab_size)."""
        logits = self.lm_head(self.hidden(idx))
        return logits if self.output_mult == 1.0 else logits * self.output_mult

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy in nats; with chunk_rows, fused with the output layer over row chunks
        (scaling_lab/model/fused_loss.py) so that the full logits never exist."""
        if chunk_rows is None:
            logits = self(idx)
            # reshape, not view: a DDP rank's rows of a batch (module.py: y[rank::world]) are not contiguous
            return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        return linear_cross_entropy(self.hidden(idx).flatten(0, 1), self.lm_head.weight, targets.flatten(),
                                    self.output_mult, chunk_rows)
