"""W&B settings (scaling_lab/tracking.py): which mode a run or fit logs in."""

from pathlib import Path

import pytest


@pytest.mark.parametrize("env, configured, expected", [
    (None, "offline", "offline"), ("online", "offline", "online"), ("dryrun", "offline", "offline"),
    ("run", "offline", "online"), ("offline", "disabled", "disabled"), ("online", "disabled", "disabled"),
])
def test_the_wandb_mode_honours_the_environment_except_over_logger_none(monkeypatch, env, configured, expected):
    from scaling_lab import tracking

    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    assert tracking.mode(configured) == expected
    if expected == "disabled":
        assert tracking.fit_settings({"mode": configured}, group=None, out_dir=Path(".")) is None
