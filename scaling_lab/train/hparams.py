"""Learning rate and batch size when the config leaves them null: a published per-size rule.

DeepSeek LLM (Bi et al. 2024, Sec. 3.1, Eq. 1) fitted near-optimal values against compute C = M * D, with M the
non-embedding FLOPs per token including attention (accounting convention "deepseek_M"):
    lr_opt    = 0.3118 * C ** -0.1250
    batch_opt = 0.2920 * C ** 0.3271   (tokens per optimizer step)
Their fit spans 1e17..3e20 FLOPs; at the tiny budgets of a CPU sweep it is an extrapolation, which the record
states through `hparams_source`.
"""

from __future__ import annotations

from scaling_lab import accounting
from scaling_lab.model.config import ModelConfig

RULES = ("deepseek",)


def deepseek_lr(compute: float) -> float:
    return 0.3118 * compute**-0.1250


def deepseek_batch_tokens(compute: float) -> float:
    return 0.2920 * compute**0.3271


def rule_batch(shape: ModelConfig, tokens: int) -> float:
    """The published batch in sequences, before rounding and capping at the run's length (the planner shows both)."""
    return deepseek_batch_tokens(accounting.train_flops(shape, tokens, "deepseek_M")) / shape.block_size


def resolve(
    shape: ModelConfig, tokens: int, lr: float | None, batch_size: int | None, rule: str
) -> tuple[float, int, dict[str, str]]:
    """(lr, batch size in sequences, where each came from)."""
    if rule not in RULES:
        raise ValueError(f"train.lr_rule={rule!r} is not one of {RULES}")
    compute = accounting.train_flops(shape, tokens, "deepseek_M")
    source = {"lr": "config", "batch_size": "config"}
    if lr is None:
        lr = deepseek_lr(compute)
        source["lr"] = "DeepSeek LLM (Bi et al. 2024) Eq. 1: 0.3118 * C^-0.125, C = M*D"
    if batch_size is None:
        sequences = rule_batch(shape, tokens)
        total = accounting.train_sequences(tokens, shape.block_size)
        batch_size = int(min(max(1, round(sequences)), total))
        source["batch_size"] = "DeepSeek LLM (Bi et al. 2024) Eq. 1: 0.2920 * C^0.3271 tokens"
    return float(lr), int(batch_size), source
