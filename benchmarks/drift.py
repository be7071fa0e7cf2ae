"""Benchmark: time and memory of one drift check at production size.

    .venv/bin/python benchmarks/drift.py [--current-rows 100000] [--reference-rows 50000]
                                         [--features 60] [--repeats 3] [--max-rows N]

Setup (untimed): a seeded synthetic customer table with `--features` features (4 in 5 numeric: counts,
amounts with missing values, ratios; 1 in 5 categorical with 3 to 40 categories), a small real CatBoost
fitted on it and saved as a model artifact whose reference sample holds `--reference-rows` rows, and a
current Parquet file of `--current-rows` rows, without predictions and with a few shifted features.

Each repeat runs in a fresh subprocess and times what `churnguard drift --current FILE` does after
loading the model: read the file, check it against the schema, score every row, judge every column,
build Evidently's report, write the HTML and the JSON (not the MLflow and workspace logging). Peak RSS is
the subprocess's own (`ru_maxrss`), imports included. Target: median <= 60 s and peak <= 4 GiB.
`--max-rows` lowers the sampling cap (policy `drift.max_rows`, 200,000 by default) to show its effect.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TIME_TARGET_SECONDS = 60.0
MEMORY_TARGET_BYTES = 4 * 1024**3


def synthetic(rows: int, features: int, seed: int, shift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {"customer_id": np.array([f"C{seed}-{i:07d}" for i in range(rows)])}
    for index in range(features):
        name = f"feature_{index:02d}"
        kind = index % 5
        moved = shift and index in (0, 1, 4)  # three features move in the current window
        if kind == 4:
            levels = 3 + (index * 7) % 38
            shares = np.random.default_rng(index).dirichlet(np.ones(levels))  # the same in every frame
            if moved:
                shares = np.roll(shares, 1)  # categories trade their shares
            labels = np.array([f"level_{k}" for k in range(levels)], dtype=object)
            columns[name] = labels[rng.choice(levels, rows, p=shares)]
        elif kind == 0:
            columns[name] = rng.poisson(8.0 * (0.7 if moved else 1.0), rows).astype(float)
        elif kind == 1:
            values = rng.gamma(2.0, 50.0 * (1.3 if moved else 1.0), rows)
            values[rng.random(rows) < 0.05] = np.nan
            columns[name] = values
        elif kind == 2:
            columns[name] = rng.normal(0.0, 1.0, rows)
        else:
            columns[name] = rng.beta(2.0, 5.0, rows)
    frame = pd.DataFrame(columns)
    logit = (
        -2
        + 0.1 * (8 - frame["feature_00"])
        + 0.004 * frame["feature_01"].fillna(100)
        - 0.5 * frame["feature_02"]
    )
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def prepare(folder: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    from catboost import CatBoostClassifier

    from churnguard.artifact import Calibration, HealthMapping, ModelArtifact, ModelContract
    from churnguard.schema import FeatureSchema, FeatureSpec
    from churnguard.scoring import TierConfig, choose_thresholds

    train = synthetic(max(args.reference_rows, 20_000), args.features, seed=1, shift=False)
    names = [c for c in train.columns if c.startswith("feature_")]
    schema = FeatureSchema(
        features=[
            FeatureSpec(
                name=n, dtype="categorical" if train[n].dtype == object else "numeric", group="activity"
            )
            for n in names
        ]
    ).fit(train)
    model = CatBoostClassifier(
        iterations=60, depth=5, verbose=False, allow_writing_files=False, thread_count=2,
        cat_features=schema.categorical_names, random_seed=0,
    )  # fmt: skip
    model.fit(schema.coerce(train), train["label"])
    calibration = Calibration(method="identity")
    probability = calibration.apply(model.predict_proba(schema.coerce(train))[:, 1])
    thresholds = choose_thresholds(TierConfig(), probability, train["label"].to_numpy())
    contract = ModelContract(
        model_name="churn-bench", dataset="bench", dataset_kind="snapshot", dataset_hash="bench",
        schema=schema, calibration=calibration, thresholds=thresholds,
        health=HealthMapping.for_thresholds(thresholds),
    )  # fmt: skip
    reference = synthetic(args.reference_rows, args.features, seed=2, shift=False)[names]
    reference["prediction"] = calibration.apply(model.predict_proba(schema.coerce(reference))[:, 1])
    reference["alert_tier"] = thresholds.assign(reference["prediction"].to_numpy())
    model_dir = ModelArtifact(contract, model, reference).save(folder / "model")
    current = folder / "current.parquet"
    synthetic(args.current_rows, args.features, seed=3, shift=True).drop(columns=["label"]).to_parquet(
        current
    )
    return model_dir, current


def child(model_dir: Path, current: Path, out: Path, max_rows: int | None) -> None:
    """One timed drift check; prints a JSON line with seconds, peak RSS and the verdict."""
    from churnguard.artifact import ModelArtifact
    from churnguard.tracking import ResolvedModel
    from monitoring.drift import check_drift, load_current
    from monitoring.inputs import MonitoredModel
    from monitoring.policy import load_monitoring_config

    policy = load_monitoring_config().drift
    if max_rows:
        policy = policy.model_copy(update={"max_rows": max_rows})
    artifact = ModelArtifact.load(model_dir)
    model = MonitoredModel(artifact, ResolvedModel(str(model_dir), model_dir, None, "local"), None)
    started = time.perf_counter()
    frame = load_current(current, None, model)
    result = check_drift(model, frame, policy, out, source=str(current))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss": peak,
                "drift_detected": result.drift_detected,
                "drifted": result.drifted_features,
                "notes": result.notes,
                "rows": result.summary["rows"],
                "html_bytes": result.report_path.stat().st_size,
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--current-rows", type=int, default=100_000)
    parser.add_argument("--reference-rows", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-rows", type=int, default=None, help="override drift.max_rows (sampling cap)")
    parser.add_argument("--child", nargs=3, metavar=("MODEL_DIR", "CURRENT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]), args.max_rows)
        return 0

    with tempfile.TemporaryDirectory(prefix="churnguard-drift-bench-") as folder:
        print(
            f"preparing {args.reference_rows:,} reference and {args.current_rows:,} current rows "
            f"x {args.features} features and a CatBoost model ...",
            flush=True,
        )
        model_dir, current = prepare(Path(folder), args)
        runs = []
        for repeat in range(args.repeats):
            command = [
                sys.executable,
                __file__,
                "--child",
                str(model_dir),
                str(current),
                f"{folder}/out{repeat}",
            ]
            if args.max_rows:
                command += ["--max-rows", str(args.max_rows)]
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(
                f"  repeat {repeat + 1}: {run['seconds']:.1f} s, peak RSS {run['peak_rss'] / 2**30:.2f} GiB",
                flush=True,
            )

    seconds = statistics.median(r["seconds"] for r in runs)
    peak = max(r["peak_rss"] for r in runs)
    last = runs[-1]
    print(
        f"\ndrift check, {args.current_rows:,} current vs {args.reference_rows:,} reference rows x "
        f"{args.features} features (scoring, verdicts, Evidently report, "
        f"HTML {last['html_bytes'] / 2**20:.1f} MiB):"
    )
    print(f"  median {seconds:.1f} s of {args.repeats} (target <= {TIME_TARGET_SECONDS:.0f} s)")
    print(f"  peak RSS {peak / 2**30:.2f} GiB (target <= {MEMORY_TARGET_BYTES / 2**30:.0f} GiB)")
    print(f"  rows used: {last['rows']}; sampling: {'; '.join(last['notes']) or 'none needed'}")
    print(f"  verdict: drift detected={last['drift_detected']} in {', '.join(last['drifted'][:6])}")
    ok = seconds <= TIME_TARGET_SECONDS and peak <= MEMORY_TARGET_BYTES
    print("  targets met" if ok else "  TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
