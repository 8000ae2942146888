"""CONF_DIR: the Hydra configs. They live in conf/ at the top of a checkout; a wheel ships them inside the package
as scaling_lab/conf/ (pyproject.toml maps conf/ to the package scaling_lab.conf), so a checkout, an editable install
and a wheel install each find the configs of the code that is running."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"
