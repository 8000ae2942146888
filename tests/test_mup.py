"""μP: the coordinate check separates μP from the standard parametrisation; μP is a per-run model option."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from scaling_lab import layout, records
from scaling_lab.model import mup
from scaling_lab.model.config import ModelConfig, ShapeError
from scaling_lab.model.coord_check import coord_check, slopes
from scaling_lab.model.gpt import GPT

WIDTHS = (32, 64, 128, 256, 512)  # a 16x width ratio


@pytest.fixture(scope="module")
def checks():
    return {p: slopes(coord_check(p, widths=WIDTHS, base_width=32)) for p in ("standard", "mup")}


def test_coordinate_check_is_flat_under_mup(checks):
    # every layer's activation update changes by less than 16^0.4 ~ 3x over a 16x width range
    assert all(abs(s) < 0.4 for s in checks["mup"].values()), checks["mup"]


def test_coordinate_check_blows_up_under_the_standard_parametrisation(checks):
    # Adam's updates add up over fan_in: hidden activations grow about as width^2 here, logits about as width^1
    assert min(checks["standard"][f"block{i}"] for i in range(2)) > 1.0, checks["standard"]
    assert checks["standard"]["logits"] > 0.5


def test_mup_at_its_base_width_starts_from_the_standard_init():
    def params(parametrization, width):
        torch.manual_seed(0)
        cfg = ModelConfig(n_layer=2, d_model=width, n_head=4, vocab_size=64, block_size=16,
                          parametrization=parametrization, mup_base_width=64)
        return dict(GPT(cfg).named_parameters())

    base, sp = params("mup", 64), params("standard", 64)
    assert all(torch.equal(base[k], sp[k]) for k in sp)
    wide, sp_wide = params("mup", 256), params("standard", 256)
    assert torch.allclose(wide["blocks.0.mlp.up.weight"], sp_wide["blocks.0.mlp.up.weight"] / 2)  # 1/sqrt(4)
    assert torch.equal(wide["tok_emb.weight"], sp_wide["tok_emb.weight"])


def test_param_groups_scale_only_hidden_matrices():
    cfg = ModelConfig(n_layer=1, d_model=128, n_head=4, vocab_size=64, block_size=16, parametrization="mup",
                      mup_base_width=32)
    model = GPT(cfg)
    groups = mup.param_groups(cfg, model.named_parameters(), lr=1e-2, weight_decay=0.1)
    hidden = {id(p) for n, p in model.named_parameters() if mup.is_hidden(n, p)}
    for g in groups:
        is_hidden = id(g["params"][0]) in hidden
        assert g["lr"] == pytest.approx(1e-2 / 4 if is_hidden else 1e-2)
        # AdamW decays by lr x wd: hidden matrices keep the base width's product (the mup package's MuAdamW)
        matrices = g["params"][0].dim() >= 2
        assert g["weight_decay"] == pytest.approx(0.1 * 4 if is_hidden else 0.1 if matrices else 0.0)
        assert all((id(p) in hidden) == (id(g["params"][0]) in hidden) for p in g["params"])
    assert groups[0]["lr"] == 1e-2  # group 0 carries the peak LR that training logs
    sp = ModelConfig(n_layer=1, d_model=128, n_head=4, vocab_size=64, block_size=16)
    sp_groups = mup.param_groups(sp, GPT(sp).named_parameters(), lr=1e-2, weight_decay=0.1)
    assert [(g["weight_decay"], g["lr"]) for g in sp_groups] == [(0.1, 1e-2), (0.0, 1e-2)]


def test_mup_needs_a_base_width():
    with pytest.raises(ShapeError, match="model.mup_base_width"):
        ModelConfig(n_layer=1, d_model=32, n_head=4, vocab_size=64, block_size=16, parametrization="mup")
    with pytest.raises(ShapeError, match="model.parametrization"):
        ModelConfig(n_layer=1, d_model=32, n_head=4, vocab_size=64, block_size=16, parametrization="ntk")


def test_mup_runs_have_their_own_ids_and_standard_ids_do_not_change():
    from hydra import compose, initialize_config_dir

    from scaling_lab.conf_dir import CONF_DIR
    from scaling_lab.train.run import RunSpec

    def run_id(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return RunSpec.from_config(compose("main", overrides=["model.d_model=128", *overrides])).run_id

    standard = run_id()
    assert run_id("model.mup_base_width=32") == standard  # the base width means nothing without mup
    assert len({standard, run_id("model.parametrization=mup"), run_id("model.parametrization=mup",
                                                                      "model.mup_base_width=32")}) == 3


@pytest.mark.slow
def test_a_mup_run_trains_and_records_its_parametrisation(tmp_path):
    env = {**os.environ, "SCALING_LAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "scaling_lab.cli", "train", "model.d_model=128",
                           "model.parametrization=mup", "model.mup_base_width=32", "train.tokens=8192",
                           "data.max_chars=400000", "data.val_fraction=0.3", "data.val_tokens=4096",
                           "train.eval_points=1", f"results_dir={tmp_path}", "logger=none", "progress=false"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = layout.record_paths(tmp_path)
    rec = records.read_record(path)
    assert rec["model"]["parametrization"] == "mup" and rec["model"]["mup_base_width"] == 32
    assert rec["final_val_loss"] < 5.0  # learned something: uniform guessing over 257 ids scores ln 257 = 5.55
