"""Maximal update parametrisation (μP), in-repo: width-dependent init, LR and multipliers for the GPT.

Yang et al. 2022, "Tensor Programs V" (μTransfer), Table 3 (Adam column) and Table 8, in multiplier form as in
their `mup` package, relative to a base width b (model.mup_base_width) with width multiplier m = d_model / b:
  input weights (token / position embeddings), LayerNorm gains   init and Adam LR unchanged
  hidden matrices (qkv, proj, MLP up/down)                        init std x 1/sqrt(m), Adam LR x 1/m,
                                                                  AdamW weight decay x m (lr x wd unchanged)
  output logits (the readout, tied to the token embedding)        x 1/m (their MuReadout / MuSharedReadout)
  attention logits                                                q.k / d_head instead of / sqrt(d_head) (Sec. 4)
At m = 1 it equals the standard parametrisation except for the attention scale. The standard parametrisation
(GPT-2 init, one LR for all) stays the default; scaling_lab/model/coord_check.py shows the difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import nn

from scaling_lab.model.config import ModelConfig


def width_mult(cfg: ModelConfig) -> float:
    return cfg.d_model / cfg.mup_base_width if cfg.parametrization == "mup" else 1.0


def attention_scale(cfg: ModelConfig) -> float | None:
    """The factor on q.k; None keeps scaled_dot_product_attention's 1/sqrt(d_head)."""
    return 1.0 / cfg.head_dim if cfg.parametrization == "mup" else None


def output_multiplier(cfg: ModelConfig) -> float:
    return 1.0 / width_mult(cfg)


def hidden_std(cfg: ModelConfig, std: float) -> float:
    """Init std of a hidden matrix given its std at the base width (variance ~ 1/fan_in under μP)."""
    return std / math.sqrt(width_mult(cfg))


def is_hidden(name: str, param: nn.Parameter) -> bool:
    """Hidden matrices: both dimensions grow with width. Embeddings (and the readout tied to them) do not."""
    return param.dim() >= 2 and "emb" not in name


def param_groups(cfg: ModelConfig, named: Iterable[tuple[str, nn.Parameter]], lr: float,
                 weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only (nanoGPT's grouping); under μP hidden matrices' LR x 1/m and
    their weight decay x m. AdamW decays by lr x wd per step, so that product, like the rest of the recipe, stays
    what it was at the base width (the `mup` package's MuAdamW does the same).

    Under the standard parametrisation this is exactly two groups, matrices then vectors, in parameter order.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in named:
        m = width_mult(cfg) if is_hidden(name, p) else 1.0
        decay = weight_decay * m if p.dim() >= 2 else 0.0
        groups.setdefault((decay, 1.0 / m), []).append(p)
    return [{"params": ps, "weight_decay": decay, "lr": lr * scale} for (decay, scale), ps in groups.items()]
