"""Where churnguard keeps its files: the project root, the configs and the git-ignored state folder."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """`configs/` of this checkout, or `CHURNGUARD_CONFIG_DIR` (the container image sets it)."""
    return Path(os.environ.get("CHURNGUARD_CONFIG_DIR", PROJECT_ROOT / "configs")).resolve()


def state_dir() -> Path:
    """The git-ignored folder for everything churnguard writes: MLflow store, studies, logs, outputs."""
    path = Path(os.environ.get("CHURNGUARD_STATE_DIR", PROJECT_ROOT / ".churnguard")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_path(raw: str | Path, base_dir: Path) -> Path:
    """Expand `${VAR}`, `~` and `{state}`, then resolve relative paths against `base_dir`.

    Dataset configs use this so `../../../shared/data/...` works from any working directory,
    and `{state}/sim/...` points at the simulator's default output.
    """
    text = os.path.expanduser(os.path.expandvars(str(raw)))
    if "{state}" in text:
        text = text.replace("{state}", str(state_dir()))
    path = Path(text)
    return (path if path.is_absolute() else base_dir / path).resolve()
