"""Coordinate check: does a parametrisation keep activations the same size as the model gets wider?

Yang et al. 2022 (Tensor Programs V, Sec. 7 and App. D.1; the `mup` package's coord check): train the same GPT at
several widths for a few Adam steps, then measure how far each layer's output moved: the mean |activation change|
over a fixed batch. Under the standard parametrisation the change grows with width (Adam's updates add up over
fan_in coordinates); under μP it stays flat. `slopes` summarises a check as d log|change| / d log width per layer
(0 = flat).
"""

from __future__ import annotations

import numpy as np
import torch

from scaling_lab.model import mup
from scaling_lab.model.config import ModelConfig
from scaling_lab.model.gpt import GPT


def coord_check(parametrization: str, widths=(32, 64, 128, 256, 512), base_width: int = 32, steps: int = 4,
                lr: float = 1e-2, n_layer: int = 2, n_head: int = 4, vocab_size: int = 257, block_size: int = 32,
                batch_size: int = 8, seed: int = 0) -> dict[int, dict[str, float]]:
    """{width: {layer: mean |activation change|}} over `steps` AdamW steps on one fixed batch of random tokens."""
    tokens = torch.randint(vocab_size, (batch_size, block_size + 1), generator=torch.Generator().manual_seed(seed))
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    out = {}
    for width in widths:
        torch.manual_seed(seed)
        cfg = ModelConfig(n_layer=n_layer, d_model=width, n_head=n_head, vocab_size=vocab_size,
                          block_size=block_size, parametrization=parametrization, mup_base_width=base_width)
        model = GPT(cfg)
        opt = torch.optim.AdamW(mup.param_groups(cfg, model.named_parameters(), lr, 0.0), lr=lr)
        before = _activations(model, x)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            model.loss(x, y).backward()
            opt.step()
        after = _activations(model, x)
        out[width] = {name: (after[name] - before[name]).abs().mean().item() for name in after}
    return out


def _activations(model: GPT, x: torch.Tensor) -> dict[str, torch.Tensor]:
    acts: dict[str, torch.Tensor] = {}

    def record(name):
        return lambda module, args, output: acts.__setitem__(name, output)

    hooks = [block.register_forward_hook(record(f"block{i}")) for i, block in enumerate(model.blocks)]
    with torch.no_grad():
        acts["logits"] = model(x)
    for hook in hooks:
        hook.remove()
    return acts


def slopes(check: dict[int, dict[str, float]]) -> dict[str, float]:
    """Per layer, the least-squares slope of log mean |activation change| against log width."""
    widths = sorted(check)
    log_w = np.log(widths)
    return {layer: float(np.polyfit(log_w, np.log([check[w][layer] for w in widths]), 1)[0])
            for layer in check[widths[0]]}
