"""`bentoml build` packages the service from bentofile.yaml: the service, its configs and the lock file,
without downloading anything (the locked packages are installed when the image is built)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from model_fixtures import telco_artifact_dir

from churnguard.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow

DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens there: any download at build time fails


def pins(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if "==" in line and not line.lstrip().startswith("#")}


def test_bentoml_build_packages_the_service_configs_and_lock(tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        # The build imports the service, which reads the model's schema: a local artifact here,
        # the registry (MLFLOW_TRACKING_URI) in a real build.
        "CHURNGUARD_MODEL_URI": str(telco_artifact_dir()),
        "CHURNGUARD_STATE_DIR": str(tmp_path / "state"),
        "HTTP_PROXY": DEAD_PROXY,
        "HTTPS_PROXY": DEAD_PROXY,
        "ALL_PROXY": DEAD_PROXY,
        "NO_PROXY": "",
        "UV_OFFLINE": "1",
        "PIP_NO_INDEX": "1",
    }
    bentoml = Path(sys.executable).with_name("bentoml")
    built = subprocess.run(
        [str(bentoml), "build", ".", "--output", "tag"],
        cwd=PROJECT_ROOT,  # BentoML reads the bentofile only from within the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = home / "bentos" / name / version
    assert name == "churnguard" and bento.is_dir(), built.stdout

    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["service"] == "service.app:ChurnService"
    assert manifest["models"] == []  # the model comes from MLflow when the service starts
    assert {env["name"] for env in manifest["envs"]} >= {"MLFLOW_TRACKING_URI", "CHURNGUARD_MODEL_URI"}
    routes = {route["route"] for route in manifest["schema"]["routes"]}
    assert {"/predict", "/predict_batch"} <= routes

    source = bento / "src"
    for path in ("service/app.py", "service/run.py", "churnguard/predict.py", "alerts/outbox.py",
                 "configs/service.yaml", "configs/scoring.yaml", "configs/alerts.yaml",
                 "requirements.lock"):  # fmt: skip
        assert (source / path).is_file(), path
    for left_out in ("tests", "benchmarks", "notebooks", "training", ".churnguard", ".venv"):
        assert not (source / left_out).exists(), left_out
    assert not list(source.rglob("__pycache__"))
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    assert (source / "requirements.lock").read_text() == lock
    # The image installs exactly the locked versions (BentoML adds its own pin, the same one).
    installed = pins((bento / "env" / "python" / "requirements.txt").read_text())
    assert pins(lock) <= installed and len(installed - pins(lock)) <= 1

    # The Bento's own source is enough to import the service (nothing is missing from the package).
    imported = subprocess.run(
        [sys.executable, "-c", "import service.app as app; print(app.__file__)"],
        cwd=source,
        env={**env, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert Path(imported.stdout.strip().splitlines()[-1]).is_relative_to(source)
