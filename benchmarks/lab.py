"""Benchmark: the experiment lab's quality and speed bars, measured the way `churnguard tune` runs.

    .venv/bin/python benchmarks/lab.py [--telco-trials 20] [--crm-trials 5] [--skip-crm]

- Telco (snapshot): `run_tune("telco", trials=20)`; its single test evaluation must reach ROC-AUC >= 0.85
  and ECE <= 0.03, and must not fall below plain CatBoost (default parameters) fitted on the same
  train+validation rows and scored on the same test rows.
- Speed: that 20-trial Telco study, end to end (data, trials, final fit, plots, registration) <= 300 s
  on two cores.
- Reproducibility: two 3-trial Telco studies with the same seed give identical test metrics.
- Simulated CRM (events, >= 20,000 customers): test ROC-AUC within 0.02 of the simulator's oracle
  (its exact churn probabilities) on the same test rows, and median alert lead time >= 30 days.
  Simulates `{state}/sim` with 20,000 customers (seed 7) if it is not there.

Runs against a throwaway MLflow store and Optuna storage; prints a table; exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("lab_benchmark")


@dataclass
class Bar:
    name: str
    measured: float
    target: str
    passed: bool
    note: str = ""


def default_catboost_auc(dataset: str) -> float:
    """Plain CatBoost, default parameters (two threads), on the lab's own split."""
    from catboost import CatBoostClassifier, Pool
    from sklearn.metrics import roc_auc_score

    from churnguard.datasets import load_dataset_config
    from training.config import load_training_config
    from training.data import load_lab_data
    from training.splits import make_split

    table = load_lab_data(load_dataset_config(dataset)).table
    split = make_split(table, load_training_config().split)
    features = table.schema.coerce(table.frame)
    label = table.frame["label"].to_numpy()
    model = CatBoostClassifier(thread_count=2, random_seed=0, verbose=0, allow_writing_files=False)
    model.fit(Pool(features[split.final], label[split.final], cat_features=table.schema.categorical_names))
    return float(roc_auc_score(label[split.test], model.predict_proba(features[split.test])[:, 1]))


def oracle_auc(dataset: str) -> float:
    """The simulator's exact churn probabilities, scored on the lab's test rows."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from churnguard.datasets import load_dataset_config
    from churnguard.settings import state_dir
    from training.config import load_training_config
    from training.data import load_lab_data
    from training.splits import make_split

    table = load_lab_data(load_dataset_config(dataset)).table
    split = make_split(table, load_training_config().split)
    test = table.frame.loc[split.test, ["customer_id", "observation_date", "label"]]
    truth = pd.read_parquet(state_dir() / "sim" / "truth_probabilities.parquet")
    truth["customer_id"] = truth["customer_id"].astype(str)
    joined = test.merge(truth, on=["customer_id", "observation_date"], how="left", validate="one_to_one")
    if joined["probability"].isna().any():
        raise RuntimeError(f"{int(joined['probability'].isna().sum())} test rows have no oracle probability")
    return float(roc_auc_score(joined["label"], joined["probability"]))


def ensure_simulation(customers: int = 20_000, seed: int = 7) -> None:
    from churnguard.settings import state_dir

    folder = state_dir() / "sim"
    if (folder / "truth_probabilities.parquet").is_file():
        return
    from churnguard.simulate import SimulationConfig, simulate, write

    log.info("simulating %d customers (seed %d) into %s", customers, seed, folder)
    write(simulate(SimulationConfig(customers=customers, seed=seed)), folder)


def telco_bars(trials: int, scratch: Path) -> list[Bar]:
    from training.tune import run_tune

    started = time.perf_counter()
    result = run_tune(
        "telco", trials=trials, storage=f"sqlite:///{scratch / 'optuna.db'}", study="bench-telco"
    )
    seconds = time.perf_counter() - started
    auc, ece = result.test_metrics["test_roc_auc"], result.test_metrics["test_ece"]
    baseline = default_catboost_auc("telco")
    return [
        Bar("telco test ROC-AUC", auc, ">= 0.85", auc >= 0.85),
        Bar("telco test ECE", ece, "<= 0.03", ece <= 0.03),
        Bar("telco vs default CatBoost", auc - baseline, ">= 0", auc >= baseline, f"default {baseline:.4f}"),
        Bar(f"telco tune --trials {trials} (s)", seconds, "<= 300", seconds <= 300),
    ]


def reproducibility_bar(scratch: Path) -> Bar:
    from training.tune import run_tune

    storage = f"sqlite:///{scratch / 'optuna.db'}"
    first = run_tune("telco", trials=3, storage=storage, study="bench-repro-1", seed=123)
    second = run_tune("telco", trials=3, storage=storage, study="bench-repro-2", seed=123)
    differing = [k for k in first.test_metrics if first.test_metrics[k] != second.test_metrics.get(k)]
    return Bar(
        "same seed, same metrics",
        float(len(differing)),
        "0 differing",
        not differing,
        ", ".join(differing[:3]),
    )


def crm_bars(trials: int, scratch: Path) -> list[Bar]:
    from training.tune import run_tune

    ensure_simulation()
    started = time.perf_counter()
    result = run_tune("crm", trials=trials, storage=f"sqlite:///{scratch / 'optuna.db'}", study="bench-crm")
    seconds = time.perf_counter() - started
    auc = result.test_metrics["test_roc_auc"]
    oracle = oracle_auc("crm")
    lead = result.test_metrics.get("test_lead_time_median_days", 0.0)
    coverage = result.test_metrics.get("test_alert_coverage", 0.0)
    return [
        Bar(
            "crm test ROC-AUC vs oracle",
            auc - oracle,
            ">= -0.02",
            auc >= oracle - 0.02,
            f"model {auc:.4f}, oracle {oracle:.4f}",
        ),
        Bar("crm median alert lead (days)", lead, ">= 30", lead >= 30, f"{coverage:.0%} of churners alerted"),
        Bar(f"crm tune --trials {trials} (s)", seconds, "(demo: a few minutes)", True),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--telco-trials", type=int, default=20)
    parser.add_argument("--crm-trials", type=int, default=5)
    parser.add_argument("--skip-crm", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    with tempfile.TemporaryDirectory(prefix="churnguard-lab-bench-") as folder:
        scratch = Path(folder)
        # A throwaway MLflow store; the simulator output stays in the usual state folder.
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
        os.environ["MLFLOW_REGISTRY_URI"] = os.environ["MLFLOW_TRACKING_URI"]
        os.environ["CHURNGUARD_ARTIFACT_ROOT"] = (scratch / "mlartifacts").as_uri()
        bars = telco_bars(args.telco_trials, scratch)
        bars.append(reproducibility_bar(scratch))
        if not args.skip_crm:
            bars += crm_bars(args.crm_trials, scratch)

    print(f"\n{'bar':<34} {'measured':>10}  {'target':<24} {'ok':<4} note")
    for bar in bars:
        verdict = "yes" if bar.passed else "NO"
        print(f"{bar.name:<34} {bar.measured:>10.4f}  {bar.target:<24} {verdict:<4} {bar.note}")
    missed = [bar.name for bar in bars if not bar.passed]
    print(
        f"\n{len(bars) - len(missed)}/{len(bars)} bars met"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
