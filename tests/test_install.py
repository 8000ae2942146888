"""A non-editable install: the wheel carries conf/ and the code as pyproject.toml lists them, and a run launched
outside any checkout composes its config from the installed package."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from support import isolated_env

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the checkout, so the build's build/ and egg-info stay out of the repository."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("scaling_lab", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # no build isolation: setuptools comes from this environment, so the test needs no index
    subprocess.run([*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return wheel


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
def test_wheel_install_trains_from_its_packaged_configs(tmp_path):
    wheel = build_wheel(tmp_path)
    shipped = {f"scaling_lab/{p.relative_to(ROOT / 'scaling_lab').as_posix()}"
               for p in (ROOT / "scaling_lab").rglob("*.py")}
    shipped |= {f"scaling_lab/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped - set(zipfile.ZipFile(wheel).namelist()) == set()

    # installed into a user's own git repository, as a project's .venv would be: that commit is not scaling-lab's
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q")
    git(project, "commit", "-q", "--allow-empty", "-m", "a user's project")
    site = project / "site"
    subprocess.run([*PIP, "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=300)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = isolated_env(tmp_path / "cache", PYTHONPATH=str(site))  # replaces the checkout on the test's PYTHONPATH
    proc = subprocess.run([sys.executable, str(site / "bin" / "scaling-lab"), "train", "model.name=tiny-1",
                           "train.tokens=4096", "train.batch_size=2", "data.val_tokens=2048", "data.max_docs=300",
                           "accelerator=cpu", "progress=false", "logger=none"],
                          cwd=outside, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    (hydra_yaml,) = (outside / "results" / "train" / ".hydra").glob("*/.hydra/hydra.yaml")
    sources = yaml.safe_load(hydra_yaml.read_text())["hydra"]["runtime"]["config_sources"]
    assert {"path": str(site / "scaling_lab" / "conf"), "schema": "file", "provider": "main"} in sources
    (record_path,) = (outside / "results" / "train" / "runs").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "completed" and record["git_commit"] is None

    probe = subprocess.run([sys.executable, "-c", "import scaling_lab.fit.run as f; print(f.__file__); "
                            "print(f.settings({})['bootstrap'])"],
                           cwd=outside, env=env, capture_output=True, text=True, check=True)
    module, bootstrap = probe.stdout.split()
    assert Path(module).is_relative_to(site)
    assert int(bootstrap) == yaml.safe_load((ROOT / "conf" / "fit" / "default.yaml").read_text())["bootstrap"]
