"""Benchmark: the tuned model against plain CatBoost with default parameters on small events data
shaped like ChurnSim (*Fighting Churn with Data*), over several split seeds (issue 16).

    .venv/bin/python benchmarks/tuned_vs_default.py [--seeds 0,1,2,3,4] [--trials 20] [--customers 1470]

ChurnSim-like data: the project's simulator with ~1,470 accounts over a year, written as a ChurnSim
export is: an events file keyed by account, and a subscriptions file (one row per term, start and
end date) that defines churn, with a declared `data_end` (the export day) so that running terms are
not read as churn. Monthly observation dates and a 30-day horizon give a few hundred churner rows, and
validation rows with a handful of churners: the situation where the search overfits.

For each split seed `run_tune` runs as `churnguard tune` does, with `search.events_objective:
customer_folds` (scored on folds of customers, never on the test rows). Plain CatBoost with default
parameters is fitted on the same train+validation rows and scored on the same test rows. Prints mean
± sd test ROC-AUC of both and the per-seed wins; exits 1 when the tuned model loses on average.
Runs against a throwaway MLflow store and Optuna storage. These are quality figures, not speed.

`--curves N` answers why instead (no tune): with CatBoost's defaults (the study's trial 0) it fits the
final model's customer folds for N iterations and prints, by iteration count, the folds' mean validation
ROC-AUC (what the lab chooses on) beside the test ROC-AUC of the folds' average (what the bar scores),
with the count per-fold early stopping picks and plain CatBoost's test ROC-AUC on the same rows. A third
curve scores only the latest dates of train+validation (as many as the test dates), out of fold: a
choice of count that reads no test row but looks like them in time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("tuned_vs_default")

EVENT_TYPES = """\
event_types:
  login: {group: activity, label: logins}
  feature_use: {group: activity, has_value: true, label: feature sessions}
  order: {group: transactions, has_value: true, label: orders}
  payment: {group: payments, has_value: true, label: payments}
  ticket: {group: service, has_value: true, label: support tickets}
  complaint: {group: service, label: complaints}
  csat: {group: satisfaction, has_value: true, label: CSAT responses}
  nps: {group: satisfaction, has_value: true, label: NPS responses}
  email_open: {group: engagement, label: email opens}
  webinar: {group: engagement, label: webinars attended}
  contact_change: {group: relationship, label: key-contact changes}
"""


def write_churnsim(folder: Path, customers: int, seed: int) -> Path:
    """Simulate a ChurnSim-sized base and write it as an account-keyed export; returns the YAML."""
    import pandas as pd

    from churnguard.simulate import SimulationConfig, simulate

    config = SimulationConfig(customers=customers, days=480, seed=seed, history_days=120)
    sim = simulate(config)
    folder.mkdir(parents=True, exist_ok=True)
    # The simulator's own churn events are its truth, not something an export would log.
    events = sim.events[sim.events["type"] != "churn"].rename(columns={"customer_id": "account_id"})
    events[["account_id", "timestamp", "type", "value"]].to_csv(folder / "events.csv", index=False)
    accounts = sim.customers[["customer_id", "signup_date", "plan", "segment"]].rename(
        columns={"customer_id": "account_id"}
    )
    accounts.to_csv(folder / "accounts.csv", index=False)
    subscriptions = sim.contracts[["customer_id", "start_date", "end_date", "mrr"]].rename(
        columns={"customer_id": "account_id"}
    )
    subscriptions.to_csv(folder / "subscriptions.csv", index=False)
    export_day = pd.Timestamp(config.start) + pd.Timedelta(days=config.days)
    first = pd.Timestamp(config.start) + pd.Timedelta(days=60)
    last = export_day - pd.Timedelta(days=30)
    yaml = folder / "churnsim.yaml"
    yaml.write_text(
        f"""\
kind: events
name: churnsim
description: ChurnSim-like simulated accounts (events plus subscriptions), for benchmarks only.
events:
  - path: events.csv
    columns: {{customer_id: account_id, timestamp: timestamp, type: type, value: value}}
    data_end: {export_day:%Y-%m-%d}
customers:
  path: accounts.csv
  id_column: account_id
  signup_column: signup_date
  static_columns: [plan, segment]
{EVENT_TYPES}observation:
  start: {first:%Y-%m-%d}
  end: {last:%Y-%m-%d}
  every_days: 30
horizon_days: 30
churn:
  kind: explicit
  subscriptions:
    path: subscriptions.csv
    id_column: account_id
    end_column: end_date
    start_column: start_date
    data_end: {export_day:%Y-%m-%d}
"""
    )
    return yaml


@dataclass
class SeedResult:
    seed: int
    tuned: float
    default: float
    best_validation: float
    tuned_out_of_fold: float  # train+validation rows, customer-grouped folds: judged without test rows
    default_out_of_fold: float
    validation_churners: int
    test_churners: int
    test_rows: int
    selected_trial: int | None  # the trial the final model was fitted with (training.selection)


def plain_catboost(data):
    """Plain CatBoost: its own defaults (1,000 iterations, the learning rate it picks), two threads."""
    from catboost import CatBoostClassifier

    model = CatBoostClassifier(thread_count=2, random_seed=0, verbose=0, allow_writing_files=False)
    return model.fit(data)


def default_catboost(dataset: Path, out_of_fold: bool = True) -> tuple[float, float, int, int, int]:
    """Plain CatBoost (default parameters, two threads) on the lab's own split of `dataset`: test
    ROC-AUC, out-of-fold ROC-AUC over train+validation (the customer-grouped folds the lab's final
    model uses; NaN without `out_of_fold`, which costs five more fits), the holdout validation rows'
    churners, test churners and test rows."""
    import numpy as np
    from catboost import CatBoostClassifier, Pool
    from sklearn.metrics import roc_auc_score

    from churnguard.datasets import load_dataset_config
    from training.config import load_training_config
    from training.data import load_lab_data
    from training.splits import fold_indices, make_split

    config = load_training_config()
    table = load_lab_data(load_dataset_config(dataset)).table
    split = make_split(table, config.split)
    features = table.schema.coerce(table.frame)
    label = table.frame["label"].to_numpy()
    categorical = table.schema.categorical_names

    def fit(rows) -> CatBoostClassifier:
        return plain_catboost(Pool(features.iloc[rows], label[rows], cat_features=categorical))

    model = fit(split.final)
    auc = float(roc_auc_score(label[split.test], model.predict_proba(features.iloc[split.test])[:, 1]))
    final = np.flatnonzero(split.final)
    customers = table.frame["customer_id"].to_numpy()[final]
    predictions = np.full(len(final), np.nan)
    folds = fold_indices(label[final], customers, config.search.folds, config.search.seed)
    for fit_rows, held_out in folds if out_of_fold else []:
        fold_model = fit(final[fit_rows])
        predictions[held_out] = fold_model.predict_proba(features.iloc[final[held_out]])[:, 1]
    return (
        auc,
        float(roc_auc_score(label[final], predictions)) if out_of_fold else float("nan"),
        int(label[split.validation].sum()),
        int(label[split.test].sum()),
        int(split.test.sum()),
    )


CURVE_POINTS = (50, 100, 150, 200, 300, 400, 600, 800, 1000)


def early_stopped_count(curve, patience: int) -> int:
    """The iteration count CatBoost's early stopping keeps on this validation curve (AUC, higher better)."""
    best = 0
    for iteration, score in enumerate(curve):
        if score > curve[best]:
            best = iteration
        if iteration - best >= patience:
            break
    return best + 1


def iteration_curves(dataset: Path, seeds: list[int], iterations: int) -> None:
    """Per split seed: the fold-mean validation curve and the fold average's test curve (CatBoost's
    defaults as trial 0 has them), the counts the lab would pick, and plain CatBoost on the same rows."""
    import numpy as np
    from catboost import CatBoostClassifier, Pool
    from sklearn.metrics import roc_auc_score

    from churnguard.datasets import load_dataset_config
    from churnguard.schema import ID_COLUMN, LABEL_COLUMN, OBSERVATION_COLUMN
    from training.config import load_training_config
    from training.data import load_lab_data
    from training.fit import catboost_params, default_point
    from training.splits import fold_indices, make_split

    config = load_training_config()
    search = config.search
    table = load_lab_data(load_dataset_config(dataset)).table
    features = table.schema.coerce(table.frame)
    label = table.frame[LABEL_COLUMN].to_numpy()
    customers = table.frame[ID_COLUMN].to_numpy()
    observed = table.frame[OBSERVATION_COLUMN].to_numpy()
    categorical = table.schema.categorical_names
    settings = catboost_params({**default_point(search.space), "iterations": iterations}, search, search.seed)
    points = [point for point in CURVE_POINTS if point <= iterations]
    rows = []
    for seed in seeds:
        split = make_split(table, config.split, seed)
        final, test = np.flatnonzero(split.final), np.flatnonzero(split.test)
        test_pool = Pool(features.iloc[test], cat_features=categorical)
        late = np.isin(observed, np.unique(observed[final])[-config.split.events.test_dates :])
        late_rows = final[late[final]]
        late_out_of_fold = np.zeros((iterations, len(late_rows)))
        curves, staged = [], []
        for fit_rows, held_out in fold_indices(label[final], customers[final], search.folds, search.seed):
            fit, held = final[fit_rows], final[held_out]
            held_late = np.isin(late_rows, held)
            model = CatBoostClassifier(**settings).fit(
                Pool(features.iloc[fit], label[fit], cat_features=categorical),
                eval_set=Pool(features.iloc[held], label[held], cat_features=categorical),
                use_best_model=False,
            )
            curves.append(model.get_evals_result()["validation"]["AUC"])
            staged.append(list(model.staged_predict(test_pool, prediction_type="RawFormulaVal")))
            late_pool = Pool(features.iloc[late_rows[held_late]], cat_features=categorical)
            late_out_of_fold[:, held_late] = list(
                model.staged_predict(late_pool, prediction_type="RawFormulaVal")
            )
        late_curve = [roc_auc_score(label[late_rows], scores) for scores in late_out_of_fold]
        fold_mean = np.mean(curves, axis=0)
        average = np.mean(staged, axis=0)  # (iteration, test row): the fold average's log-odds

        def test_auc(count: int, average=average, truth=label[test]) -> float:
            return float(roc_auc_score(truth, average[count - 1]))

        chosen = round(float(np.mean([early_stopped_count(c, search.early_stopping_rounds) for c in curves])))
        peak = int(np.argmax(fold_mean)) + 1
        late_peak = int(np.argmax(late_curve)) + 1
        plain = plain_catboost(Pool(features.iloc[final], label[final], cat_features=categorical))
        plain_auc = roc_auc_score(label[test], plain.predict_proba(features.iloc[test])[:, 1])
        row = {"seed": seed, "chosen": chosen, "peak": peak, "late_peak": late_peak, "plain": plain_auc}
        row |= {
            "test_chosen": test_auc(chosen),
            "test_peak": test_auc(peak),
            "test_late_peak": test_auc(late_peak),
        }
        row |= {f"folds_{n}": fold_mean[n - 1] for n in points} | {f"test_{n}": test_auc(n) for n in points}
        row |= {f"late_{n}": late_curve[n - 1] for n in points}
        row["late_churners"] = int(label[late_rows].sum())
        rows.append(row)
        log.info(
            "split seed %d: early stopping keeps %d iterations (test %.4f), fold-mean peak at %d "
            "(test %.4f), latest dates' peak at %d (test %.4f; %d churners), plain CatBoost %.4f",
            *(seed, chosen, row["test_chosen"], peak, row["test_peak"], late_peak, row["test_late_peak"]),
            *(row["late_churners"], plain_auc),
        )
    mean = lambda key: float(np.mean([row[key] for row in rows]))  # noqa: E731
    gap = lambda key: np.array([row[key] - row["plain"] for row in rows])  # noqa: E731
    error = lambda values: values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0  # noqa: E731
    print(f"\nCatBoost's defaults (trial 0), {len(rows)} split seeds, customer folds, {iterations} trees")
    print(f"plain CatBoost (1,000 iterations, its own learning rate) on the test rows: {mean('plain'):.4f}")
    print(
        f"{'iterations':<28} {'fold-mean val AUC':>18} {'latest dates OOF':>17} {'test AUC (fold avg)':>20} "
        f"{'test - plain (SE)':>17} {'>= plain':>9}"
    )
    labelled = [
        (f"early-stopped (mean {mean('chosen'):.0f})", None, None, "test_chosen"),
        (f"fold-mean peak (mean {mean('peak'):.0f})", None, None, "test_peak"),
        (f"latest dates' peak (mean {mean('late_peak'):.0f})", None, None, "test_late_peak"),
        *[(str(n), f"folds_{n}", f"late_{n}", f"test_{n}") for n in points],
    ]
    for name, folds_key, late_key, test_key in labelled:
        difference = gap(test_key)
        folds_shown = f"{mean(folds_key):.4f}" if folds_key else "-"
        late_shown = f"{mean(late_key):.4f}" if late_key else "-"
        print(
            f"{name:<28} {folds_shown:>18} {late_shown:>17} {mean(test_key):>20.4f} "
            f"{difference.mean():>+9.4f} ({error(difference):.4f}) "
            f"{int((difference >= 0).sum()):>5}/{len(rows)}"
        )


def run_seed(dataset: Path, seed: int, trials: int, scratch: Path, default_oof: bool = True) -> SeedResult:
    from training.tune import run_tune

    os.environ["CHURNGUARD_TRAINING__SPLIT__SEED"] = str(seed)
    try:
        result = run_tune(
            str(dataset),
            trials=trials,
            storage=f"sqlite:///{scratch / 'optuna.db'}",
            study=f"churnsim-split-{seed}",
        )
        default, default_auc_oof, validation_churners, test_churners, test_rows = default_catboost(
            dataset, default_oof
        )
    finally:
        del os.environ["CHURNGUARD_TRAINING__SPLIT__SEED"]
    return SeedResult(
        seed,
        result.test_metrics["test_roc_auc"],
        default,
        float(result.best_value or float("nan")),
        result.test_metrics["test_roc_auc_out_of_fold"],
        default_auc_oof,
        validation_churners,
        test_churners,
        test_rows,
        result.selected_trial,
    )


def report(results: list[SeedResult], trials: int, fold_dates: str) -> bool:
    """Print the table; True when the tuned model does not lose to default CatBoost on average."""
    import numpy as np

    print(f"\nChurnSim-like events data, {trials} trials, events objective: customer folds ({fold_dates})")
    print(
        f"{'split seed':<11} {'tuned AUC':>10} {'default AUC':>12} {'tuned-dflt':>11} "
        f"{'best val':>9} {'tuned OOF':>10} {'default OOF':>12} {'val churners':>13} "
        f"{'test churners/rows':>19} {'selected':>9}"
    )
    for row in results:
        print(
            f"{row.seed:<11} {row.tuned:>10.4f} {row.default:>12.4f} {row.tuned - row.default:>+11.4f} "
            f"{row.best_validation:>9.4f} {row.tuned_out_of_fold:>10.4f} {row.default_out_of_fold:>12.4f} "
            f"{row.validation_churners:>13} {f'{row.test_churners}/{row.test_rows}':>19} "
            f"{'trial ' + str(row.selected_trial):>9}"
        )
    tuned = np.array([row.tuned for row in results])
    default = np.array([row.default for row in results])
    sd = lambda values: values.std(ddof=1) if len(values) > 1 else 0.0  # noqa: E731
    wins = int((tuned > default).sum())
    holds = int((tuned >= default).sum())
    kept = sum(row.selected_trial == 0 for row in results)
    tuned_oof = np.array([row.tuned_out_of_fold for row in results])
    default_oof = np.array([row.default_out_of_fold for row in results])
    print(
        f"tuned   {tuned.mean():.4f} ± {sd(tuned):.4f}\n"
        f"default {default.mean():.4f} ± {sd(default):.4f}\n"
        f"tuned - default {np.mean(tuned - default):+.4f} ± {sd(tuned - default):.4f} (sd of the per-seed "
        f"difference; standard error of its mean {sd(tuned - default) / np.sqrt(len(results)):.4f}); "
        f"tuned ahead on {wins} of {len(results)} split seeds, tuned >= default on {holds}\n"
        f"the final model used CatBoost's defaults (trial 0) on {kept} of {len(results)} split seeds"
    )
    oof = f"out of fold (train+validation, no test row): tuned {tuned_oof.mean():.4f} ± {sd(tuned_oof):.4f}"
    if not np.isnan(default_oof).any():  # measured unless --no-default-oof
        oof += (
            f", default {default_oof.mean():.4f} ± {sd(default_oof):.4f}, "
            f"tuned ahead on {int((tuned_oof > default_oof).sum())} of {len(results)}"
        )
    print(oof)
    return bool(tuned.mean() >= default.mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated split seeds")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--customers", type=int, default=1470)
    parser.add_argument("--data-seed", type=int, default=3, help="the simulator's seed")
    parser.add_argument(
        "--no-default-oof",
        action="store_true",
        help="skip default CatBoost's out-of-fold score (five fits per seed); its test score is kept",
    )
    parser.add_argument(
        "--fold-dates",
        choices=["configured", "validation", "all"],
        default="configured",
        help="search.customer_fold_dates for this run (default: as configs/training.yaml says)",
    )
    parser.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a `search` setting for this run, e.g. start_from_defaults=true (repeatable)",
    )
    parser.add_argument(
        "--curves",
        type=int,
        metavar="N",
        help="no tune: print the folds' and the test rows' ROC-AUC by iteration count, up to N (see above)",
    )
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    with tempfile.TemporaryDirectory(prefix="churnguard-tuned-vs-default-") as folder:
        scratch = Path(folder)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
        os.environ["MLFLOW_REGISTRY_URI"] = os.environ["MLFLOW_TRACKING_URI"]
        os.environ["CHURNGUARD_ARTIFACT_ROOT"] = (scratch / "mlartifacts").as_uri()
        os.environ["CHURNGUARD_TRAINING__SEARCH__EVENTS_OBJECTIVE"] = "customer_folds"
        for setting in args.search:
            key, _, value = setting.partition("=")
            os.environ[f"CHURNGUARD_TRAINING__SEARCH__{key.upper()}"] = value
        if args.fold_dates != "configured":
            os.environ["CHURNGUARD_TRAINING__SEARCH__CUSTOMER_FOLD_DATES"] = args.fold_dates
        from training.config import load_training_config

        search = load_training_config().search
        defaults = f"start_from_defaults={search.start_from_defaults}, "
        defaults += f"defaults_within_se={search.defaults_within_se}"
        args.fold_dates = f"{search.customer_fold_dates} dates, {defaults}"
        dataset = write_churnsim(scratch / "churnsim", args.customers, args.data_seed)
        if args.curves:
            iteration_curves(dataset, seeds, args.curves)
            return 0
        results = []
        for seed in seeds:
            results.append(run_seed(dataset, seed, args.trials, scratch, not args.no_default_oof))
            log.info("split seed %d: tuned %.4f, default %.4f", seed, results[-1].tuned, results[-1].default)
        holds = report(results, args.trials, args.fold_dates)
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
