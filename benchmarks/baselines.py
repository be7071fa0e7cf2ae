"""Benchmark: the tuned model against its baselines on the same test rows, and against the simulator's
oracles (issue 15).

    .venv/bin/python benchmarks/baselines.py [--datasets cdnow,crm,telco] [--trials 5]

For each dataset `run_tune` runs as `churnguard tune` does; the baselines (recency, logistic regression,
BG/NBD for transaction data) are the ones every tune fits on train+validation and scores on the test
rows (training.baselines). On the simulated CRM the exact oracle and the oracle without the hidden
frailty are scored on the same rows. Simulates `{state}/sim` (20,000 customers, seed 7) if it is not
there. Runs against a throwaway MLflow store; prints a table; exits 1 when the model does not beat
every baseline on both ROC-AUC and PR-AUC (the bar of issue 15).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("baselines_benchmark")


def ensure_simulation(customers: int = 20_000, seed: int = 7) -> None:
    from churnguard.settings import state_dir
    from churnguard.simulate import SimulationConfig, simulate, write

    folder = state_dir() / "sim"
    if (folder / "truth_probabilities.parquet").is_file():
        return
    log.info("simulating %d customers (seed %d) into %s", customers, seed, folder)
    write(simulate(SimulationConfig(customers=customers, seed=seed)), folder)


def oracle_scores(dataset: str) -> dict[str, tuple[float, float]]:
    """The simulator's oracles on the lab's test rows: ROC-AUC and PR-AUC of each probability column."""
    import pandas as pd
    from sklearn.metrics import average_precision_score, roc_auc_score

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
    rows = test.merge(truth, on=["customer_id", "observation_date"], how="left", validate="one_to_one")
    scores = {}
    for column, name in (
        ("probability", "oracle"),
        ("probability_without_frailty", "oracle_without_frailty"),
    ):
        if column in rows and rows[column].notna().all():
            scores[name] = (
                float(roc_auc_score(rows["label"], rows[column])),
                float(average_precision_score(rows["label"], rows[column])),
            )
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="cdnow,crm")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from training.tune import run_tune

    table: list[tuple[str, str, float, float]] = []
    behind: list[str] = []
    with tempfile.TemporaryDirectory(prefix="churnguard-baselines-bench-") as folder:
        scratch = Path(folder)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
        os.environ["MLFLOW_REGISTRY_URI"] = os.environ["MLFLOW_TRACKING_URI"]
        os.environ["CHURNGUARD_ARTIFACT_ROOT"] = (scratch / "mlartifacts").as_uri()
        for dataset in [name.strip() for name in args.datasets.split(",") if name.strip()]:
            if dataset == "crm":
                ensure_simulation()
            storage = f"sqlite:///{scratch / 'optuna.db'}"
            result = run_tune(dataset, trials=args.trials, storage=storage, study=f"bench-{dataset}")
            metrics = result.test_metrics
            table.append((dataset, "model", metrics["test_roc_auc"], metrics["test_pr_auc"]))
            names = sorted({key.split("_test_")[0].removeprefix("baseline_") for key in result.baselines})
            for name in names:
                roc = result.baselines[f"baseline_{name}_test_roc_auc"]
                pr = result.baselines[f"baseline_{name}_test_pr_auc"]
                table.append((dataset, name, roc, pr))
            if result.baseline_warnings:
                behind.append(dataset)
            if dataset == "crm":
                table += [(dataset, name, roc, pr) for name, (roc, pr) in oracle_scores(dataset).items()]

    print(f"\n{'dataset':<8} {'ranking':<24} {'ROC-AUC':>8} {'PR-AUC':>8}")
    for dataset, name, roc, pr in table:
        print(f"{dataset:<8} {name:<24} {roc:>8.4f} {pr:>8.4f}")
    if behind:
        print(f"\nthe model does not beat every baseline on: {', '.join(behind)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
