"""The README's promise: a Quickstart of exactly two lines, the second of which is what CI runs."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent


def quickstart_lines():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_lines_and_ci_runs_the_second():
    setup_and_run, tests = quickstart_lines()
    assert "scripts/setup.sh" in setup_and_run and "sweep=local_small" in setup_and_run
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == tests


def test_quickstart_preset_is_at_least_4_sizes_by_3_budgets():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("main", overrides=["sweep=local_small"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert len(params["model.name"].split(",")) >= 4
    assert len(str(params["train.tokens"]).split(",")) >= 3
    assert cfg.results_dir == "results/local_small" and cfg.logger.mode == "offline"


def test_readme_cfg_command_prints_the_composed_config():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "scaling_lab.cli", "train", "--cfg", "job", "model.name=tiny-3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "name: tiny-3" in proc.stdout and "tokens:" in proc.stdout


@pytest.mark.parametrize("args, shown, hidden", [
    (["fit", "--cfg", "job", "input=results/x", "fit.bootstrap=7"], ["bootstrap: 7", "input: results/x"], ["hydra:"]),
    (["sweep", "--cfg", "job", "sweep=local_small"], ["name: local_small", "batch_size: 8"], ["hydra:", "250000,"]),
    (["sweep", "sweep=local_small", "--cfg", "hydra"], ["train.tokens: 250000,500000,1000000"], ["model:\n"]),
])
def test_fit_and_sweep_print_their_composed_config_without_running(tmp_path, capsys, args, shown, hidden):
    from scaling_lab.cli import main

    assert main([*args, f"results_dir={tmp_path / 'r'}"] if args[0] == "sweep" else args) == 0
    out = capsys.readouterr().out
    assert all(text in out for text in shown), out
    assert not any(text in out for text in hidden), out
    assert not (tmp_path / "r").exists()


def test_other_dash_flags_of_fit_and_sweep_fail_in_one_line(capsys):
    from scaling_lab.cli import main

    assert main(["fit", "--info", "input=x"]) == 2
    assert capsys.readouterr().err.strip() == (
        "scaling-lab fit: error: fit takes key=value overrides and Hydra's --cfg job|hydra|all; got --info input=x")
