"""Small real models and data with known answers for the monitoring tests.

`customer_frame` draws customers whose churn depends on their features in a known way; `fit_artifact`
fits a real CatBoost on them and saves a real model artifact (identity calibration, capacity tiers).
The changes the drift tests look for are applied explicitly, so each test knows what must be found.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier

from churnguard.artifact import Calibration, HealthMapping, ModelArtifact, ModelContract
from churnguard.schema import ID_COLUMN, LABEL_COLUMN, FeatureSchema, FeatureSpec
from churnguard.scoring import CapacityPolicy, TierConfig, choose_thresholds

SEGMENTS = ("smb", "mid", "enterprise")
REGIONS = ("emea", "amer", "apac")
MODEL_NAME = "churn-fixture"

SCHEMA = FeatureSchema(
    features=[
        FeatureSpec(name="tenure_days", dtype="numeric", group="relationship", kind="tenure"),
        FeatureSpec(name="segment", dtype="categorical", group="profile"),
        FeatureSpec(name="region", dtype="categorical", group="profile"),
        FeatureSpec(
            name="login__count_30d",
            dtype="numeric",
            group="activity",
            kind="count",
            event_type="login",
            window_days=30,
        ),
        FeatureSpec(
            name="payment__mean_90d",
            dtype="numeric",
            group="payments",
            kind="mean",
            event_type="payment",
            window_days=90,
        ),
        FeatureSpec(
            name="csat__mean_90d", dtype="numeric", group="satisfaction", kind="mean", event_type="csat"
        ),
    ]
)
FEATURES = SCHEMA.names


def churn_probability(frame: pd.DataFrame) -> np.ndarray:
    """The true churn probability of each customer: fewer logins, later payments, low CSAT raise it."""
    csat = frame["csat__mean_90d"].fillna(3.5)
    logit = (
        -1.6
        - 0.08 * (frame["login__count_30d"] - 12)
        + 0.12 * frame["payment__mean_90d"]
        - 0.6 * (csat - 3.5)
        - 0.0008 * frame["tenure_days"]
    )
    return 1 / (1 + np.exp(-logit.to_numpy(dtype=float)))


def customer_frame(rows: int, seed: int) -> pd.DataFrame:
    """Customers in the fixture schema with a label drawn from `churn_probability`."""
    rng = np.random.default_rng(seed)
    segment = rng.choice(SEGMENTS, rows, p=[0.5, 0.3, 0.2])
    base_logins = np.select([segment == "smb", segment == "mid"], [8.0, 14.0], 22.0)
    frame = pd.DataFrame(
        {
            ID_COLUMN: [f"C{seed:03d}-{i:06d}" for i in range(rows)],
            "tenure_days": rng.gamma(2.0, 250.0, rows).round(),
            "segment": segment.astype(object),
            "region": rng.choice(REGIONS, rows, p=[0.4, 0.4, 0.2]).astype(object),
            "login__count_30d": rng.poisson(base_logins * rng.gamma(4.0, 0.25, rows)).astype(float),
            "payment__mean_90d": np.maximum(0, rng.normal(3.0, 2.5, rows)).round(1),
            "csat__mean_90d": np.clip(rng.normal(3.8, 0.7, rows), 1, 5).round(2),
        }
    )
    frame.loc[rng.random(rows) < 0.05, "csat__mean_90d"] = np.nan  # not every customer answers surveys
    frame[LABEL_COLUMN] = (rng.random(rows) < churn_probability(frame)).astype("int8")
    return frame


# ------------------------------------------------------------------------------------------- changes


def cut_logins(frame: pd.DataFrame, segment: str, factor: float, seed: int) -> pd.DataFrame:
    """A product change: each login of `segment` customers survives with probability `factor`."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    rows = out["segment"] == segment
    out.loc[rows, "login__count_30d"] = rng.binomial(
        out.loc[rows, "login__count_30d"].to_numpy(dtype=int), factor
    ).astype(float)
    return out


def new_region(frame: pd.DataFrame, region: str, share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out.loc[rng.random(len(out)) < share, "region"] = region
    return out


def blank_out(frame: pd.DataFrame, column: str, share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out.loc[rng.random(len(out)) < share, column] = np.nan
    return out


# -------------------------------------------------------------------------------------------- models


def fit_artifact(
    directory: Path, rows: int = 4000, seed: int = 0, reference_rows: int = 2000, iterations: int = 60
) -> ModelArtifact:
    """Fit a small real CatBoost and save a complete model artifact to `directory`."""
    train = customer_frame(rows, seed)
    schema = SCHEMA.fit(train)
    model = CatBoostClassifier(
        iterations=iterations,
        depth=4,
        learning_rate=0.2,
        random_seed=seed,
        verbose=False,
        allow_writing_files=False,
        thread_count=2,
        cat_features=schema.categorical_names,
    )
    model.fit(schema.coerce(train), train[LABEL_COLUMN])
    calibration = Calibration(method="identity")
    probability = calibration.apply(model.predict_proba(schema.coerce(train))[:, 1])
    thresholds = choose_thresholds(
        TierConfig(policy="capacity", capacity=CapacityPolicy(high=0.1, medium=0.2)),
        probability,
        train[LABEL_COLUMN].to_numpy(),
    )
    from sklearn.metrics import roc_auc_score

    contract = ModelContract(
        model_name=MODEL_NAME,
        dataset="fixture",
        dataset_kind="snapshot",
        dataset_hash="fixture",
        horizon_days=90,
        schema=schema,
        calibration=calibration,
        thresholds=thresholds,
        health=HealthMapping.for_thresholds(thresholds),
        metrics={"test_roc_auc": float(roc_auc_score(train[LABEL_COLUMN], probability))},
    )
    reference = train.sample(n=min(reference_rows, rows), random_state=seed)[FEATURES].reset_index(drop=True)
    reference["prediction"] = calibration.apply(model.predict_proba(schema.coerce(reference))[:, 1])
    reference["alert_tier"] = thresholds.assign(reference["prediction"].to_numpy())
    artifact = ModelArtifact(contract, model, reference)
    artifact.save(directory)
    return artifact


def register_artifact(directory: Path, name: str = MODEL_NAME, alias: str = "champion") -> tuple[str, str]:
    """Log the artifact folder in an MLflow run as the lab does and register it; returns (run_id, version)."""
    import mlflow
    from mlflow import MlflowClient

    from churnguard.artifact import ARTIFACT_DIR
    from churnguard.tracking import configure_mlflow, experiment_id

    configure_mlflow()
    with mlflow.start_run(experiment_id=experiment_id("fixture-lab")) as run:
        mlflow.log_artifacts(str(directory), artifact_path=f"model/{ARTIFACT_DIR}")
        run_id = run.info.run_id
    client = MlflowClient()
    with contextlib.suppress(mlflow.exceptions.MlflowException):  # already registered by an earlier call
        client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, alias, version.version)
    return run_id, str(version.version)
