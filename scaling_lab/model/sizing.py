"""A valid shape for a target parameter count: how "N ~ 5M" becomes n_layer / d_model / n_head.

Rule: depth follows a fixed aspect ratio d_model / n_layer, the width is a multiple of a fixed head size, and the
exact N (scaling_lab.accounting.params_total, the record's `params`) is recorded, never the target.
Kaplan et al. 2020 (Sec. 3.1, Fig. 5) find the loss at fixed N within a few percent over d_model / n_layer from
about 20 to 200, so the ratio matters little as long as every size of a sweep follows the same one. Defaults:
aspect ratio 64 (GPT-2 small: 768 / 12) and head size 64 (GPT-2 and GPT-3's smaller models, Brown et al. 2020,
Table 2.1). CPU presets use smaller heads so that tiny widths stay divisible.

For a target N: n_layer is the depth whose on-rule shape has the N nearest the target (in log), then d_model is
the multiple of the head size that brings N nearest the target at that depth.
"""

from __future__ import annotations

import math

from scaling_lab import accounting
from scaling_lab.model.config import ModelConfig, ShapeError

ASPECT_RATIO = 64
HEAD_DIM = 64


def shape_for_params(target: float, vocab_size: int, block_size: int, aspect_ratio: float = ASPECT_RATIO,
                     head_dim: int = HEAD_DIM, **extra) -> ModelConfig:
    """The shape whose exact parameter count is nearest `target` under the rule above. `extra`: ModelConfig fields
    such as parametrization."""
    if not target > 0:
        raise ShapeError(f"target parameter count must be positive, got {target!r}")
    if not isinstance(head_dim, int) or head_dim <= 0 or not aspect_ratio > 0:
        raise ShapeError(f"shape rule: head_dim must be a positive integer and aspect_ratio positive, "
                         f"got head_dim={head_dim!r}, aspect_ratio={aspect_ratio!r}")

    def build(n_layer: int, d_model: int) -> ModelConfig:
        return ModelConfig(n_layer=n_layer, d_model=d_model, n_head=d_model // head_dim, vocab_size=vocab_size,
                           block_size=block_size, **extra)

    def on_rule(n_layer: int) -> ModelConfig:
        return build(n_layer, head_dim * max(1, round(aspect_ratio * n_layer / head_dim)))

    def miss(cfg: ModelConfig) -> float:
        return abs(math.log(accounting.params_total(cfg) / target))

    depth = 1
    while accounting.params_total(on_rule(depth)) < target:
        depth += 1
    n_layer = min((max(1, depth - 1), depth), key=lambda n: miss(on_rule(n)))
    heads = 1
    while accounting.params_total(build(n_layer, head_dim * (heads + 1))) <= target:
        heads += 1
    return min(build(n_layer, head_dim * heads), build(n_layer, head_dim * (heads + 1)), key=miss)


def label(cfg: ModelConfig) -> str:
    """The run-id style shape name, L2-D64-H4, for tables."""
    return cfg.name or f"L{cfg.n_layer}-D{cfg.d_model}-H{cfg.n_head}"
