"""Benchmark: churnguard's point-in-time event features against featuretools' deep feature synthesis.

    .venv/bin/python benchmarks/features.py [--events 10000000] [--repeats 3]

One run generates a seeded synthetic CRM events table (N events, ~100k customers, six event types,
two years), builds the population at eight observation dates with `churnguard.features.population`,
and writes it all to Parquet. Every measurement then runs in a fresh subprocess that reads those files
(untimed) and times only the feature computation, so each gets a clean heap and its own peak RSS.

Measured, each as the median of `--repeats` runs:
  * churnguard `event_features`, full feature set (counts, sums, means, maxima, trend, month over
    month, recency, latest two values: 98 columns);
  * churnguard with every type count-only (counts, trend, month over month, recency: 42 columns);
  * featuretools 1.31: `calculate_feature_matrix` with a cutoff_time frame (customer_id, time),
    `include_cutoff_time=False` (so data < t, the same rule as churnguard) and `COUNT(events WHERE
    type = X)` per type, computed two ways, and the faster one is the baseline:
      - `training_window`: one call per window (training_window=w days, data in [t - w, t));
      - `use_previous`: one call, one feature per (type, window) with `use_previous=w days`.
    Its time includes building the EntitySet, as churnguard's includes encoding the raw frame.

featuretools' 24 counts (6 types x 4 windows) are checked equal to churnguard's on every row, for both
featuretools ways. Runs are interleaved (one round = every contender once), so a busy spell on the shared
machine hits all of them; CPU time is printed next to wall time as a cross-check.

Whether featuretools can run on all the data is decided first: it is timed on 1% and 10% of the customers
and extended to 100% by the power law through those two points. If that estimate exceeds
`--featuretools-budget` seconds (default 600), featuretools runs on that seeded random 10% of customers,
churnguard is timed on exactly the same subset too, and that ratio is the like-for-like one; churnguard's
full-size time is reported alongside. Exits 1 when a target is missed: full-size event_features <= 60 s
(wall, median), and >= 10x faster than the faster featuretools way like-for-like (full feature set, wall).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from churnguard.features import (
    EventTypeSpec,
    event_feature_specs,
    event_features,
    label_explicit,
    population,
    tenure_days,
)

TARGET_SECONDS = 60.0
TARGET_SPEEDUP = 10.0
WINDOWS_DAYS = (7, 30, 90, 180)
DATA_START, DATA_END = pd.Timestamp("2023-01-01"), pd.Timestamp("2025-01-01")
OBSERVATION_DATES = list(pd.date_range("2023-07-01", periods=8, freq="60D"))
HORIZON_DAYS = 90

# name: (share of events, spec, value generator or None)
EVENT_MIX: dict[str, tuple[float, EventTypeSpec]] = {
    "login": (0.40, EventTypeSpec(group="activity", label="logins")),
    "feature_use": (0.22, EventTypeSpec(group="activity", has_value=True, label="feature sessions")),
    "email_open": (0.15, EventTypeSpec(group="engagement", label="email opens")),
    "order": (0.10, EventTypeSpec(group="transactions", has_value=True, label="orders")),
    "payment": (0.08, EventTypeSpec(group="payments", has_value=True, label="payments")),
    "ticket": (0.05, EventTypeSpec(group="service", has_value=True, label="support tickets")),
}
FULL_TYPES = {name: spec for name, (_, spec) in EVENT_MIX.items()}
COUNT_ONLY_TYPES = {
    name: EventTypeSpec(group=spec.group, label=spec.label) for name, spec in FULL_TYPES.items()
}
N_FULL = len(event_feature_specs(FULL_TYPES, WINDOWS_DAYS))  # columns of each feature set
N_COUNTS = len(event_feature_specs(COUNT_ONLY_TYPES, WINDOWS_DAYS))


# ---------------------------------------------------------------------------------------------------------
# Synthetic data


def generate(n_events: int, n_customers: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Events, customers and churn dates: customers sign up over four years (most before the data
    starts), a quarter churn, and events fall uniformly in each customer's active span at a
    customer-specific (gamma-distributed) rate."""
    rng = np.random.default_rng(seed)
    day = 86_400
    start, end = DATA_START.value // 10**9, DATA_END.value // 10**9
    signup = start - 3 * 365 * day + rng.integers(0, (3 * 365 + 300) * day, n_customers)
    active_from = np.maximum(signup, start)
    churn = active_from + (rng.exponential(700, n_customers) * day).astype(np.int64)
    churn = np.where(rng.random(n_customers) < 0.25, churn, np.iinfo(np.int64).max)
    active_to = np.minimum(churn, end)
    active_seconds = np.maximum(active_to - active_from, day)
    weights = rng.gamma(0.8, 1.0, n_customers) * active_seconds
    customer = rng.choice(n_customers, n_events, p=weights / weights.sum())
    seconds = active_from[customer] + (rng.random(n_events) * active_seconds[customer]).astype(np.int64)

    names = list(EVENT_MIX)
    type_code = rng.choice(len(names), n_events, p=[share for share, _ in EVENT_MIX.values()])
    value = np.full(n_events, np.nan)
    value_draws: dict[str, Callable[[int], np.ndarray]] = {
        "feature_use": lambda n: rng.gamma(1.5, 12.0, n).round(1),  # minutes
        "order": lambda n: rng.lognormal(5.0, 1.0, n).round(2),  # amount
        "payment": lambda n: rng.lognormal(5.5, 0.8, n).round(2),
        "ticket": lambda n: rng.exponential(20.0, n).round(1),  # hours to resolve
    }
    for code, name in enumerate(names):
        if name in value_draws:
            chosen = np.flatnonzero(type_code == code)
            value[chosen] = value_draws[name](chosen.size)
    value[rng.random(n_events) < 0.01] = np.nan  # a few values missing

    ids = np.array([f"C{number:07d}" for number in range(n_customers)], dtype=object)
    events = pd.DataFrame(
        {
            "customer_id": ids[customer],
            "timestamp": pd.to_datetime(seconds, unit="s").astype("datetime64[ns]"),
            "type": np.array(names, dtype=object)[type_code],
            "value": value,
        }
    ).sort_values("timestamp", ignore_index=True)  # like a log: in time order
    customers = pd.DataFrame(
        {"customer_id": ids, "signup_date": pd.to_datetime(signup, unit="s").astype("datetime64[ns]")}
    )
    churned = pd.Series(pd.to_datetime(np.minimum(churn, end), unit="s").astype("datetime64[ns]"))
    churn_dates = churned.where(churn < end).set_axis(pd.Index(ids, name="customer_id")).rename("churn_date")
    return events, customers, churn_dates


def write_dataset(folder: Path, events: pd.DataFrame, customers: pd.DataFrame, churn: pd.Series) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    pop = population(customers, OBSERVATION_DATES, churn)
    events.to_parquet(folder / "events.parquet", index=False)
    customers.to_parquet(folder / "customers.parquet", index=False)
    churn.to_frame().to_parquet(folder / "churn.parquet")
    pop.to_parquet(folder / "population.parquet")
    return len(pop)


def write_subset(source: Path, target: Path, fraction: float, seed: int) -> int:
    """Same data restricted to a seeded random `fraction` of the customers."""
    customers = pd.read_parquet(source / "customers.parquet")
    rng = np.random.default_rng(seed + 1)
    chosen = customers[rng.random(len(customers)) < fraction]
    events = pd.read_parquet(source / "events.parquet")
    events = events[events.customer_id.isin(chosen.customer_id)].reset_index(drop=True)
    churn = pd.read_parquet(source / "churn.parquet")["churn_date"]
    return write_dataset(target, events, chosen.reset_index(drop=True), churn.reindex(chosen.customer_id))


# ---------------------------------------------------------------------------------------------------------
# Workers: one measurement each, in a fresh process


class PeakRss:
    """Peak resident memory of this process while the block runs (sampled by a thread)."""

    def __enter__(self) -> PeakRss:
        self.process = psutil.Process()
        self.before = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()  # sampled every 10 ms
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def count_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The 24 (type, window) counts under neutral names, as int64, for comparison."""
    names = [f"{name}__count_{window}d" for name in FULL_TYPES for window in WINDOWS_DAYS]
    return frame[names].astype(np.int64)


def churnguard_worker(data: Path, variant: str, save_counts: Path | None) -> dict[str, Any]:
    events = pd.read_parquet(data / "events.parquet")
    pop = pd.read_parquet(data / "population.parquet")
    types = FULL_TYPES if variant == "full" else COUNT_ONLY_TYPES
    with PeakRss() as memory:
        started, cpu_started = time.perf_counter(), time.process_time()
        features, specs = event_features(events, pop, types, WINDOWS_DAYS)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    # The rest of the point-in-time step, for the record: population, labels and tenure.
    customers = pd.read_parquet(data / "customers.parquet")
    churn = pd.read_parquet(data / "churn.parquet")["churn_date"]
    started = time.perf_counter()
    rows = population(customers, OBSERVATION_DATES, churn)
    label_explicit(rows, churn, HORIZON_DAYS)
    tenure_days(rows, customers)
    rest_seconds = time.perf_counter() - started
    if save_counts is not None:
        count_columns(features).to_parquet(save_counts)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rest_seconds": rest_seconds,
        "rss_before": memory.before,
        "peak_rss": memory.peak,
        "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "events": len(events),
        "rows": len(pop),
        "columns": len(specs),
    }


def featuretools_worker(data: Path, strategy: str, save_counts: Path | None) -> dict[str, Any]:
    import featuretools as ft
    from featuretools.primitives import Count

    warnings.filterwarnings("ignore")  # featuretools/woodwork warn about every unused column
    events = pd.read_parquet(data / "events.parquet")
    pop = pd.read_parquet(data / "population.parquet")
    # Extra cutoff_time columns pass through to the feature matrix: `row` keeps the alignment.
    cutoff = pd.DataFrame(
        {"customer_id": pop.customer_id, "time": pop.observation_date, "row": np.arange(len(pop))}
    )
    with PeakRss() as memory:
        started, cpu_started = time.perf_counter(), time.process_time()
        entityset = ft.EntitySet("crm")
        entityset.add_dataframe(
            dataframe_name="customers",
            dataframe=pd.DataFrame({"customer_id": pop.customer_id.unique()}),
            index="customer_id",
        )
        entityset.add_dataframe(
            dataframe_name="events",
            dataframe=events.reset_index(names="event_id"),
            index="event_id",
            time_index="timestamp",
            logical_types={"customer_id": "Categorical", "type": "Categorical", "value": "Double"},
        )
        entityset.add_relationship("customers", "customer_id", "events", "customer_id")
        entityset.add_interesting_values(dataframe_name="events", values={"type": list(FULL_TYPES)})
        where_counts = [
            feature
            for feature in ft.dfs(
                entityset=entityset,
                target_dataframe_name="customers",
                agg_primitives=["count"],
                where_primitives=["count"],
                trans_primitives=[],
                max_depth=1,
                features_only=True,
            )
            if feature.where is not None
        ]
        counts: dict[str, np.ndarray] = {}
        if strategy == "training_window":
            entityset.add_last_time_indexes()  # training_window needs it
            for window in WINDOWS_DAYS:
                matrix = ft.calculate_feature_matrix(
                    where_counts,
                    entityset,
                    cutoff_time=cutoff,
                    training_window=f"{window} days",
                    include_cutoff_time=False,
                )
                counts.update(_counts_by_name(matrix, where_counts, window))
        else:
            windowed = [
                ft.Feature(
                    entityset["events"].ww["event_id"],
                    parent_dataframe_name="customers",
                    primitive=Count,
                    where=feature.where,
                    use_previous=f"{window} days",
                )
                for window in WINDOWS_DAYS
                for feature in where_counts
            ]
            matrix = ft.calculate_feature_matrix(
                windowed, entityset, cutoff_time=cutoff, include_cutoff_time=False
            )
            for window in WINDOWS_DAYS:
                in_window = [feature for feature in windowed if feature.use_previous.get_value("d") == window]
                counts.update(_counts_by_name(matrix, in_window, window))
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if save_counts is not None:
        frame = pd.DataFrame(counts, index=pop.index)
        frame[sorted(frame.columns, key=_count_order)].astype(np.int64).to_parquet(save_counts)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rss_before": memory.before,
        "peak_rss": memory.peak,
        "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "events": len(events),
        "rows": len(pop),
    }


def _counts_by_name(matrix: pd.DataFrame, features: list[Any], window: int) -> dict[str, np.ndarray]:
    """featuretools' columns renamed to churnguard's, rows put back in population order via `row`."""
    ordered = matrix.sort_values("row")
    counts = {}
    for feature in features:
        event_type = feature.where.primitive.value
        counts[f"{event_type}__count_{window}d"] = ordered[feature.get_name()].fillna(0).to_numpy()
    return counts


def _count_order(name: str) -> tuple[int, int]:
    event_type, count = name.split("__")
    return list(FULL_TYPES).index(event_type), int(count.removeprefix("count_").removesuffix("d"))


WORKERS: dict[str, Callable[[Path, str, Path | None], dict[str, Any]]] = {
    "churnguard": churnguard_worker,
    "featuretools": featuretools_worker,
}


# ---------------------------------------------------------------------------------------------------------
# Orchestration


@dataclass
class Measurement:
    """Repeated runs of one worker; wall time is the figure, CPU time the cross-check on a busy machine."""

    name: str
    kind: str
    data: Path
    variant: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def run(self, save_counts: Path | None = None) -> None:
        self.runs.append(run_worker(self.kind, self.data, self.variant, save_counts))

    @property
    def seconds(self) -> float:
        return statistics.median(run["seconds"] for run in self.runs)

    @property
    def cpu_seconds(self) -> float:
        return statistics.median(run["cpu_seconds"] for run in self.runs)

    @property
    def peak_gib(self) -> float:
        return statistics.median(run["peak_rss"] for run in self.runs) / 2**30

    @property
    def before_gib(self) -> float:
        return statistics.median(run["rss_before"] for run in self.runs) / 2**30

    def describe(self) -> str:
        each = ", ".join(f"{run['seconds']:.1f}" for run in self.runs)
        return (
            f"{self.name:<46} median {self.seconds:7.2f} s wall, {self.cpu_seconds:7.2f} s CPU"
            f"  (wall runs: {each})  peak RSS {self.peak_gib:4.2f} GiB (before: {self.before_gib:4.2f})"
        )


def run_worker(kind: str, data: Path, variant: str, save_counts: Path | None = None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", kind, "--data", str(data), "--variant", variant]
    if save_counts is not None:
        command += ["--save-counts", str(save_counts)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{kind} worker ({variant}) failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_counts_agree(churnguard_counts: Path, featuretools_counts: Path) -> int:
    ours, theirs = pd.read_parquet(churnguard_counts), pd.read_parquet(featuretools_counts)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    return ours.size


def estimate_full_featuretools(workdir: Path, full: Path, seed: int) -> tuple[float, Path, int]:
    """Seconds one featuretools run (the slower, training_window way) would take on all the data.

    Timed on 1% and 10% of the customers and extended by the power law through the two points
    (featuretools scales worse than linearly here). Returns the estimate and the 10% data set.
    """
    small, large = workdir / "pilot_1pct", workdir / "subset_10pct"
    write_subset(full, small, 0.01, seed)
    large_rows = write_subset(full, large, 0.10, seed)
    small_seconds = run_worker("featuretools", small, "training_window")["seconds"]
    large_seconds = run_worker("featuretools", large, "training_window")["seconds"]
    exponent = max(1.0, np.log10(large_seconds / small_seconds))
    print(
        f"featuretools pilot (training_window): {small_seconds:.1f} s on 1% of customers, "
        f"{large_seconds:.1f} s on 10% -> scaling exponent {exponent:.2f}",
        flush=True,
    )
    return large_seconds * 10**exponent, large, large_rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--featuretools-budget", type=float, default=600.0, help="seconds per full run")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--save-counts", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.data, args.variant, args.save_counts)))
        return 0
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="churnguard-bench-") as folder:
            return benchmark(args, Path(folder))
    return benchmark(args, args.workdir)


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    machine = f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    print(f"churnguard feature benchmark: {args.events:,} events, {args.customers:,} customers, {machine}")
    started = time.perf_counter()
    full = workdir / "full"
    n_rows = write_dataset(full, *generate(args.events, args.customers, args.seed))
    print(
        f"data: {args.events:,} events of {len(EVENT_MIX)} types, {DATA_START.date()}..{DATA_END.date()}, "
        f"{n_rows:,} population rows at {len(OBSERVATION_DATES)} observation dates "
        f"({OBSERVATION_DATES[0].date()}..{OBSERVATION_DATES[-1].date()}), seed {args.seed} "
        f"(generated in {time.perf_counter() - started:.0f} s)",
        flush=True,
    )

    estimate, subset, subset_rows = estimate_full_featuretools(workdir, full, args.seed)
    if estimate > args.featuretools_budget:
        same, scope = subset, f"the same random 10% of customers (seed {args.seed + 1}, {subset_rows:,} rows)"
        print(
            f"featuretools on all data estimated at {estimate:.0f} s, over the "
            f"{args.featuretools_budget:.0f} s budget"
        )
    else:
        same, scope = full, f"all the data ({n_rows:,} rows)"
        print(f"featuretools on all data estimated at {estimate:.0f} s: like-for-like on all the data")
    print(f"like-for-like data: {scope}\n", flush=True)

    cg_full = Measurement(f"churnguard event_features, {N_FULL} features", "churnguard", full, "full")
    cg_full_counts = Measurement(
        f"churnguard event_features, count-only ({N_COUNTS})", "churnguard", full, "counts"
    )
    if same is full:
        cg_same, cg_same_counts = cg_full, cg_full_counts
    else:
        cg_same = Measurement(f"churnguard, {N_FULL} features, 10% subset", "churnguard", same, "full")
        cg_same_counts = Measurement(
            f"churnguard, count-only ({N_COUNTS}), 10% subset", "churnguard", same, "counts"
        )
    ft_window = Measurement(
        "featuretools, training_window per window", "featuretools", same, "training_window"
    )
    ft_previous = Measurement("featuretools, use_previous, one call", "featuretools", same, "use_previous")
    counts = {
        name: workdir / f"{name}_counts.parquet" for name in ("churnguard", "training_window", "previous")
    }

    # Interleaved rounds, so a busy spell on the shared machine hits every contender alike.
    for repeat in range(args.repeats):
        first = repeat == 0
        cg_full.run()
        cg_full_counts.run()
        if same is not full:
            cg_same.run()
            cg_same_counts.run()
        ft_window.run(counts["training_window"] if first else None)
        ft_previous.run(counts["previous"] if first else None)
        print(f"round {repeat + 1}/{args.repeats} done", flush=True)
    run_worker("churnguard", same, "full", counts["churnguard"])

    print()
    measurements = [cg_full, cg_full_counts]
    if same is not full:
        measurements += [cg_same, cg_same_counts]
    for measurement in [*measurements, ft_window, ft_previous]:
        print(measurement.describe())
    rest = statistics.median(run["rest_seconds"] for run in cg_full.runs)
    print(f"{'  + population, labels, tenure (churnguard)':<46} median {rest:7.2f} s wall")

    compared = check_counts_agree(counts["churnguard"], counts["training_window"])
    check_counts_agree(counts["churnguard"], counts["previous"])
    print(
        f"\ncounts agree: all {compared:,} (row, type, window) counts equal in churnguard and in both "
        "featuretools ways"
    )

    baseline = min(ft_window, ft_previous, key=lambda measurement: measurement.seconds)
    ratio = baseline.seconds / cg_same.seconds
    print(
        f"\nLIKE-FOR-LIKE on {scope}, against the faster featuretools way ({baseline.name}):\n"
        f"  churnguard {N_FULL} features: {ratio:5.1f}x faster by wall time "
        f"({baseline.seconds:.2f} s / {cg_same.seconds:.2f} s), "
        f"{baseline.cpu_seconds / cg_same.cpu_seconds:5.1f}x by CPU time\n"
        f"  churnguard count-only:  {baseline.seconds / cg_same_counts.seconds:5.1f}x faster by wall time, "
        f"{baseline.cpu_seconds / cg_same_counts.cpu_seconds:5.1f}x by CPU time\n"
        f"  against featuretools training_window: {ft_window.seconds / cg_same.seconds:5.1f}x "
        f"({N_FULL} features)\n"
        f"churnguard on all {args.events:,} events: {cg_full.seconds:.2f} s median wall, "
        f"peak RSS {cg_full.peak_gib:.2f} GiB"
    )
    missed = []
    if cg_full.seconds > TARGET_SECONDS:
        missed.append(f"full-size time {cg_full.seconds:.1f} s > {TARGET_SECONDS:.0f} s")
    if ratio < TARGET_SPEEDUP:
        missed.append(f"like-for-like speed-up {ratio:.1f}x < {TARGET_SPEEDUP:.0f}x")
    print(
        f"targets (full size <= {TARGET_SECONDS:.0f} s; >= {TARGET_SPEEDUP:.0f}x like-for-like, "
        f"{N_FULL} features, wall time): " + ("met" if not missed else "MISSED: " + "; ".join(missed))
    )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
