"""`churnguard demo` / `make demo`: the main job end to end on embedded defaults.

Each step prints what it produced and where, so the demo doubles as a tour of the product.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from churnguard.settings import state_dir

log = logging.getLogger(__name__)

DEMO_DATASETS = ("crm", "telco", "cdnow")


def step(title: str) -> Callable:
    def wrap(function: Callable) -> Callable:
        def run(*args, **kwargs):
            print(f"\n=== {title} ===", flush=True)
            started = time.perf_counter()
            result = function(*args, **kwargs)
            print(f"--- {title}: done in {time.perf_counter() - started:.1f} s", flush=True)
            return result

        return run

    return wrap


@step("1. simulate a CRM customer base")
def simulate_crm(customers: int, seed: int) -> Path:
    from churnguard.simulate import SimulationConfig, realism, simulate, write

    sim = simulate(SimulationConfig(customers=customers, seed=seed), progress=True)
    out = state_dir() / "sim"
    files = write(sim, out)
    facts = realism(sim)
    for name, path in files.items():
        print(f"  {name:<28} {path}")
    print(
        f"  annual churn {facts['annual_churn_rate']:.1%}, oracle ROC-AUC {facts['oracle_roc_auc']:.3f}, "
        f"'no login for 30 days' rule precision {facts['no_login_30d_precision']:.2f}"
    )
    return out


@step("2. validate the datasets")
def validate_all() -> None:
    from churnguard.validation import validate_dataset

    for name in DEMO_DATASETS:
        report = validate_dataset(name)
        print(report.format())
        if report.errors:
            raise SystemExit(f"dataset '{name}' has errors; see above")


@step("3. build point-in-time feature tables")
def build_features() -> dict[str, Path]:
    from churnguard.datasets import load_dataset_config
    from churnguard.feature_table import build_feature_table

    paths = {}
    for name in DEMO_DATASETS:
        table = build_feature_table(load_dataset_config(name))
        path = table.write(state_dir() / "features" / f"{name}.parquet")
        paths[name] = path
        print(
            f"  {name:<6} {len(table.frame):>8,} rows x {len(table.schema.features):>3} features, "
            f"label rate {table.labels.mean():.1%} -> {path}"
        )
    return paths


def run_demo(customers: int = 20_000, seed: int = 7) -> int:
    started = time.perf_counter()
    print(f"churnguard demo: state folder {state_dir()}")
    simulate_crm(customers, seed)
    validate_all()
    build_features()
    elapsed = time.perf_counter() - started
    print(f"\nchurnguard demo finished in {elapsed:.0f} s; everything is under {state_dir()}")
    return 0
