"""A small REAL CatBoost model on the Telco feature table, saved as a churnguard model artifact.

The service, the offline scorer and the benchmarks build and test against this until the
experiment lab registers real models. It follows the artifact contract exactly: a fitted feature
schema, an isotonic calibration fitted on held-out rows, capacity-policy tier thresholds and the
health mapping that goes with them.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, Pool

from churnguard.artifact import Calibration, HealthMapping, ModelArtifact, ModelContract
from churnguard.datasets import DatasetConfig, config_hash, load_dataset_config
from churnguard.feature_table import FeatureTable, build_feature_table
from churnguard.schema import ID_COLUMN, LABEL_COLUMN
from churnguard.scoring import TierConfig, choose_thresholds

REFERENCE_ROWS = 500


@functools.cache
def telco_table() -> FeatureTable:
    """The Telco feature table, built once per process (it takes about a second)."""
    return build_feature_table(load_dataset_config("telco"))


def telco_rows(count: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Real Telco rows: customer_id plus the model's features (no label), shuffled reproducibly."""
    table = telco_table()
    frame = table.frame.drop(columns=[LABEL_COLUMN])
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return frame if count is None else frame.head(count).reset_index(drop=True)


def telco_customers(count: int, seed: int = 0) -> list[dict]:
    """`telco_rows` as JSON-ready request records: missing values as None (JSON has no NaN)."""
    rows = telco_rows(count, seed=seed)
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in rows.to_dict("records")
    ]


def isotonic_calibration(raw: np.ndarray, label: np.ndarray) -> Calibration:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, label)
    knots_x = np.asarray(iso.X_thresholds_, dtype=float)
    knots_y = np.asarray(iso.y_thresholds_, dtype=float)
    return Calibration(method="isotonic", x=knots_x.tolist(), y=knots_y.tolist())


def build_telco_artifact(
    directory: Path,
    iterations: int = 120,
    depth: int = 5,
    seed: int = 0,
    calibration: str = "isotonic",
    model_name: str = "churn-telco",
) -> Path:
    """Fit, calibrate and save a Telco model artifact into `directory`; returns the folder."""
    return build_table_artifact(
        directory,
        telco_table(),
        load_dataset_config("telco"),
        iterations,
        depth,
        seed,
        calibration,
        model_name,
    )


def build_table_artifact(
    directory: Path,
    table: FeatureTable,
    config: DatasetConfig,
    iterations: int = 120,
    depth: int = 5,
    seed: int = 0,
    calibration: str = "isotonic",
    model_name: str = "churn-telco",
) -> Path:
    """Fit, calibrate and save a model artifact of any feature table (rows split at random)."""
    schema = table.schema
    frame = table.frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    cut_train, cut_valid = int(len(frame) * 0.6), int(len(frame) * 0.8)
    train, valid, test = frame[:cut_train], frame[cut_train:cut_valid], frame[cut_valid:]
    fitted = schema.fit(train[schema.names])

    model = CatBoostClassifier(
        iterations=iterations,
        depth=depth,
        learning_rate=0.1,
        random_seed=seed,
        verbose=False,
        thread_count=2,
        allow_writing_files=False,
    )
    model.fit(
        Pool(fitted.coerce(train), train[LABEL_COLUMN], cat_features=fitted.categorical_names),
    )

    def raw(part: pd.DataFrame) -> np.ndarray:
        return model.predict_proba(fitted.coerce(part))[:, 1]

    if calibration == "isotonic":
        calibration_map = isotonic_calibration(raw(valid), valid[LABEL_COLUMN].to_numpy())
    else:
        calibration_map = Calibration(method="identity")
    valid_p = calibration_map.apply(raw(valid))
    thresholds = choose_thresholds(TierConfig(), valid_p, valid[LABEL_COLUMN].to_numpy())

    from sklearn.metrics import roc_auc_score

    test_p = calibration_map.apply(raw(test))
    metrics = {
        "roc_auc": float(roc_auc_score(test[LABEL_COLUMN], test_p)),
        "positive_rate": float(test[LABEL_COLUMN].mean()),
    }
    contract = ModelContract(
        model_name=model_name,
        dataset=table.dataset,
        dataset_kind=table.kind,
        dataset_hash=config_hash(config),
        horizon_days=table.horizon_days,
        schema=fitted,
        calibration=calibration_map,
        thresholds=thresholds,
        health=HealthMapping.for_thresholds(thresholds),
        training_window={"start": None, "end": None},
        metrics=metrics,
        params={"iterations": iterations, "depth": depth, "seed": seed},
        versions={"catboost": __import__("catboost").__version__},
        code_version="test-fixture",
    )
    reference = train[[ID_COLUMN, *fitted.names]].head(REFERENCE_ROWS).copy()
    reference["churn_probability"] = calibration_map.apply(raw(reference))
    artifact = ModelArtifact(contract, model, reference)
    return artifact.save(Path(directory), card=f"# {model_name}\nTest fixture model on {table.dataset}.\n")


# ------------------------------------------------------------------------------------ shared fixtures


@functools.cache
def telco_artifact_dir() -> Path:
    """The default fixture model, built once per test process into a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="churnguard-model-"))
    atexit.register(shutil.rmtree, folder, True)
    return build_telco_artifact(folder / "telco")


def register_artifact(tracking_uri: str, name: str, artifact_dir: Path, alias: str | None = None) -> str:
    """Log an artifact folder as an MLflow model (models from code, no pickle) and register a version."""
    import mlflow
    from mlflow import MlflowClient

    from churnguard.settings import PROJECT_ROOT

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name("service-tests")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment(
            "service-tests",
            artifact_location=(Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts").as_uri(),
        )
    )
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PROJECT_ROOT / "churnguard" / "pyfunc_model.py"),
            artifacts={"churnguard": str(artifact_dir)},
            registered_model_name=name,
            pip_requirements=["catboost"],  # skips MLflow's slow requirement inference
        )
    version = str(info.registered_model_version)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, version)
    return version


# ------------------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    """`churnguard serve` (service.run.serve) in its own process group, on a loopback port."""

    process: subprocess.Popen
    port: int
    log_path: Path
    state_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log_tail()}")

    def tree(self) -> list[int]:
        """The launcher and every process under it (BentoML's workers live in their own sessions)."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        pids = self.tree()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        _kill_remaining(pids, grace=10.0)

    def kill(self) -> None:
        """SIGKILL the launcher, the BentoML arbiter and all its workers at once."""
        pids = self.tree()
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        self.process.wait(timeout=20)
        _kill_remaining(pids, grace=0.0)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_remaining(pids: list[int], grace: float) -> None:
    deadline = time.monotonic() + grace
    alive = [pid for pid in pids if _alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _alive(pid)]
    for pid in alive:
        _signal(pid, signal.SIGKILL)


def start_server(
    model_uri: str,
    state_dir: Path,
    *,
    env: dict[str, str] | None = None,
    workers: int = 1,
    wait: bool = True,
) -> ServerProcess:
    """Start the real service with `service.run.serve` on a free loopback port."""
    from churnguard.settings import PROJECT_ROOT

    port = free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "server.log"
    environment = {
        **os.environ,
        "CHURNGUARD_STATE_DIR": str(state_dir),
        "BENTOML_HOME": str(state_dir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": str(PROJECT_ROOT),
        **(env or {}),
    }
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO); from service.run import serve; "
        f"sys.exit(serve({model_uri!r}, '127.0.0.1', {port}, {workers}, None))"
    )
    with log_path.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop/kill reach every worker
        )
    server = ServerProcess(process, port, log_path, state_dir)
    if wait:
        server.wait_ready()
    return server
