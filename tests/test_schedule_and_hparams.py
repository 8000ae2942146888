"""LR schedule shape and the published per-size rule."""

import math

import pytest

from scaling_lab import accounting
from scaling_lab.model.config import ModelConfig
from scaling_lab.train import hparams
from scaling_lab.train.schedule import warmup_cosine, warmup_steps_for


def test_warmup_then_cosine_to_final_fraction_at_the_last_step():
    total, warmup = 100, 5
    lrs = [warmup_cosine(s, total, warmup, 0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(1 / 5)
    assert lrs[warmup - 1] == pytest.approx(1.0)
    assert lrs[warmup] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)  # the cycle is the run's own length
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    midpoint = warmup + (total - 1 - warmup) / 2
    assert warmup_cosine(int(midpoint), total, warmup, 0.1) == pytest.approx(0.55, abs=0.02)


def test_short_runs_still_warm_up_and_decay():
    assert warmup_steps_for(3, 0.05) == 1
    lrs = [warmup_cosine(s, 3, 1, 0.1) for s in range(3)]
    assert lrs == pytest.approx([1.0, 1.0, 0.1])


def test_deepseek_rule_values_and_monotonicity():
    # Bi et al. 2024 Eq. 1 at C = 1e20: lr = 0.3118e20^-0.125, batch = 0.2920e20^0.3271
    assert hparams.deepseek_lr(1e20) == pytest.approx(0.3118 * 10 ** (-2.5))
    assert hparams.deepseek_batch_tokens(1e20) == pytest.approx(0.2920 * 10 ** (20 * 0.3271))
    small = ModelConfig.resolve("tiny-1", vocab_size=257, block_size=128)
    large = ModelConfig.resolve("tiny-5", vocab_size=257, block_size=128)
    lr_s, b_s, src = hparams.resolve(small, 10**6, None, None, "deepseek")
    lr_l, b_l, _ = hparams.resolve(large, 10**6, None, None, "deepseek")
    assert lr_l < lr_s and b_l >= b_s  # bigger compute: smaller LR, bigger batch
    assert "DeepSeek" in src["lr"] and "DeepSeek" in src["batch_size"]
    compute = accounting.train_flops(small, 10**6, "deepseek_M")
    assert lr_s == pytest.approx(0.3118 * compute**-0.125)


def test_config_values_win_and_batch_never_exceeds_the_run():
    cfg = ModelConfig.resolve("tiny-1", vocab_size=257, block_size=128)
    lr, batch, src = hparams.resolve(cfg, 10**6, 3e-3, 7, "deepseek")
    assert (lr, batch, src) == (3e-3, 7, {"lr": "config", "batch_size": "config"})
    big = ModelConfig.resolve("gpt-253m", vocab_size=257, block_size=128)
    _, batch, _ = hparams.resolve(big, 512, None, None, "deepseek")
    assert batch == 4  # the rule asks for ~15 sequences; the whole budget holds four
    with pytest.raises(ValueError, match="train.lr_rule"):
        hparams.resolve(cfg, 10**6, None, None, "kaplan-ish")
    assert math.isfinite(lr)
