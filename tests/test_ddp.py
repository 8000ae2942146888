"""DDP on CPU: trainer.devices=2 runs two gloo ranks that split every batch. Same run id and, up to float
summation order, the same losses as one device; the token budget is counted once; rank zero alone writes the record,
the checkpoints and the W&B run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_fault_tolerance import cli, env, only_record, run  # noqa: F401 - env is a fixture

from scaling_lab import layout

pytestmark = pytest.mark.slow
# a moderate learning rate: at the rule's rate for batch 2 the run is chaotic and float reordering grows to 1e-2
DDP_RUN = ("train", *run("train.tokens=8192", "train.lr=0.003", "train.eval_points=2"), "accelerator=cpu")


def test_two_gloo_ranks_train_the_same_run_as_one_device(tmp_path, env):
    one = cli(*DDP_RUN, "logger=none", f"results_dir={tmp_path / 'one'}", env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = cli(*DDP_RUN, "trainer.devices=2", "logger=wandb", "train.checkpoint_every=4", "train.keep_checkpoint=true",
              f"results_dir={tmp_path / 'two'}", env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in two.stdout + two.stderr  # a second process really trained

    single, ddp = only_record(tmp_path / "one"), only_record(tmp_path / "two")
    assert ddp["run_id"] == single["run_id"]  # devices are not part of the run id: same math
    assert ddp["tokens"] == single["tokens"] == 8192  # the budget once, not once per rank
    assert ddp["flops"] == pytest.approx(6 * ddp["params"] * 8192)
    assert ddp["hparams"]["total_steps"] == single["hparams"]["total_steps"]
    assert [p[0] for p in ddp["val_curve"]] == [p[0] for p in single["val_curve"]]
    assert abs(ddp["final_val_loss"] - single["final_val_loss"]) < 1e-5

    run_dir = layout.run_dir(tmp_path / "two", ddp["run_id"])
    (offline,) = (run_dir / "wandb").glob("offline-run-*")  # one W&B run: rank zero's
    wandb = os.path.join(os.path.dirname(sys.executable), "wandb")
    out = subprocess.run([wandb, "leet", "inspect", "--summary", "--json", str(offline)], capture_output=True,
                         text=True, env=env)
    summary = json.loads(out.stdout)["summary"]
    assert summary["val/loss"] == pytest.approx(ddp["final_val_loss"], rel=1e-6) and summary["tokens"] == 8192

    import torch

    state = torch.load(layout.checkpoint_path(tmp_path / "two", ddp["run_id"]), map_location="cpu",
                       weights_only=False)
    assert state["global_step"] % 4 == 0 and state["progress"]["tokens_seen"] == state["global_step"] * 2 * 128
