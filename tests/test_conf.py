"""The config tree: every preset composes into runs that pass the checks, and every knob says what it does."""

from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir

from scaling_lab.conf_dir import CONF_DIR
from scaling_lab.data.tokenizer import ByteTokenizer
from scaling_lab.sweep import grid

PRESETS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
# `key: value` (a knob), not `key:` (a group header) nor `- item` (a defaults list entry)
KNOB = re.compile(r"^\s*[\w./@+~-]+:\s*(?P<value>[^#\s].*)$")


def test_every_knob_has_a_comment_on_its_line():
    bare = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = KNOB.match(line)
            if match and "#" not in match["value"]:
                bare.append(f"{path.relative_to(CONF_DIR)}:{number}: {line.strip()}")
    assert not bare, "knobs without a one-line comment:\n" + "\n".join(bare)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_sweep_preset_composes_into_checked_runs(preset, tmp_path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("main", overrides=[f"sweep={preset}", f"results_dir={tmp_path}"])
        assert cfg.sweep.name == preset  # the preset names its W&B group and results directory after itself
        if cfg.sweep.get("design"):  # planned presets: their runs are checked when planned (test_sweep_design.py)
            return
        # checks every job's config, and its schedule at the byte tokenizer's vocabulary
        jobs = grid.jobs("main", [f"sweep={preset}", f"results_dir={tmp_path}"])
        _, _, runs = grid.plan(jobs, ByteTokenizer().vocab_size)
    assert len(runs) >= 2 and len({r["run_id"] for r in runs}) == len(runs)
