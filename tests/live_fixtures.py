"""A small live world shared by the live-loop tests: a simulated CRM, its offline feature table, an
events model trained on it, and the CRM's files loaded into an event store through `churnguard ingest`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from model_fixtures import build_table_artifact

from churnguard.datasets import EventsDataset, load_dataset_config, load_events
from churnguard.feature_table import FeatureTable, events_table
from churnguard.settings import PROJECT_ROOT
from churnguard.simulate import SimulationConfig, simulate, write

CUSTOMERS = 700
SEED = 11


@dataclass
class LiveWorld:
    state: Path
    config: EventsDataset
    table: FeatureTable
    model_dir: Path
    store_url: str
    ingest_output: str

    def environment(self) -> dict[str, str]:
        return {"CHURNGUARD_STATE_DIR": str(self.state), "CHURNGUARD_EVENT_STORE": self.store_url}


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "churnguard.cli", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def build_live_world(state: Path, store_url: str | None = None, customers: int = CUSTOMERS) -> LiveWorld:
    """Simulate into `state/sim`, build the table and a model, and ingest the files (the CLI) into
    `store_url` (default: a SQLite store in `state`)."""
    os.environ["CHURNGUARD_STATE_DIR"] = str(state)  # crm.yaml reads {state}/sim
    write(simulate(SimulationConfig(customers=customers, days=365, seed=SEED)), state / "sim")
    config = load_dataset_config("crm")
    assert isinstance(config, EventsDataset)
    table = events_table(config, load_events(config))
    model_dir = build_table_artifact(
        state / "model", table, config, iterations=80, depth=4, model_name="churn-crm"
    )
    store_url = store_url or f"sqlite:///{state / 'events.db'}"
    world = LiveWorld(state, config, table, model_dir, store_url, "")
    done = run_cli(["ingest", "--dataset", "crm"], world.environment())
    assert done.returncode == 0, done.stderr[-3000:]
    world.ingest_output = done.stdout + done.stderr
    return world


def offline_rows(table: FeatureTable, count: int, seed: int = 0) -> pd.DataFrame:
    """`count` random (customer, observation date) rows of the offline table."""
    return table.frame.sample(n=min(count, len(table.frame)), random_state=seed).reset_index(drop=True)
