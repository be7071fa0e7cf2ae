"""Benchmark of the CRM simulator: `simulate` + `write` at 100,000 customers x 365 days.

Each repeat runs in a fresh Python process, so imports, caches and the allocator start cold and the
peak memory is that run's own. The worker times `simulate` + `write` and reads its peak RSS right after
the write; the realism figures are computed afterwards, outside the measurement.

    .venv/bin/python benchmarks/simulate.py                 # 3 repeats, the 60 s / 4 GiB target
    .venv/bin/python benchmarks/simulate.py --repeats 1 --customers 20000

Exit status 1 if the median time, the peak memory or a realism bound misses its target.
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

TARGET_SECONDS = 60.0
TARGET_GIB = 4.0
REALISM_BOUNDS = {  # from the simulator's brief: a believable base and a beatable-but-not-trivial oracle
    "annual_churn_rate": (0.10, 0.30),
    "oracle_roc_auc": (0.80, 0.92),
    "no_login_30d_precision": (0.0, 0.6),
}


def run_worker(args: argparse.Namespace) -> int:
    """One measured run; writes a JSON report to `args.report`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from churnguard.simulate import SimulationConfig, realism, simulate, write

    config = SimulationConfig(customers=args.customers, days=args.days, seed=args.seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    sim = simulate(config)
    simulated = time.perf_counter()
    write(sim, Path(args.out))
    written, cpu = time.perf_counter(), time.process_time() - cpu_started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    report = {
        "seconds": written - started,
        "cpu_seconds": cpu,  # wall time on a shared 2-core machine is noisy; CPU time is not
        "simulate_seconds": simulated - started,
        "write_seconds": written - simulated,
        "peak_gib": peak_kib / 2**20,
        "events": len(sim.events),
        "files_mib": sum(p.stat().st_size for p in Path(args.out).glob("*.parquet")) / 2**20,
    }
    if args.realism:
        report["realism"] = realism(sim)
    Path(args.report).write_text(json.dumps(report))
    return 0


def run_once(args: argparse.Namespace, repeat: int, scratch: Path) -> dict:
    out, report = scratch / f"run{repeat}", scratch / f"run{repeat}.json"
    command = [
        sys.executable,
        __file__,
        "--worker",
        f"--customers={args.customers}",
        f"--days={args.days}",
        f"--seed={args.seed}",
        f"--out={out}",
        f"--report={report}",
    ]
    if repeat == 1:
        command.append("--realism")
    started = time.perf_counter()
    subprocess.run(command, check=True)
    result = json.loads(report.read_text())
    result["process_seconds"] = time.perf_counter() - started
    return result


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--realism", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)

    print(
        f"churnguard simulator: {args.customers:,} customers x {args.days} days, seed {args.seed}, "
        f"{args.repeats} repeat(s), each in a fresh process"
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="churnguard-bench-sim-") as scratch:
        for repeat in range(1, args.repeats + 1):
            run = run_once(args, repeat, Path(scratch))
            runs.append(run)
            print(
                f"  run {repeat}: simulate+write {run['seconds']:6.1f} s "
                f"(simulate {run['simulate_seconds']:.1f} s, write {run['write_seconds']:.1f} s; "
                f"CPU {run['cpu_seconds']:.1f} s; whole process {run['process_seconds']:.1f} s), "
                f"peak RSS {run['peak_gib']:.2f} GiB, "
                f"{run['events']:,} events, {run['files_mib']:.0f} MiB of Parquet"
            )

    seconds = statistics.median(run["seconds"] for run in runs)
    peak = statistics.median(run["peak_gib"] for run in runs)
    time_ok, memory_ok = seconds <= TARGET_SECONDS, max(run["peak_gib"] for run in runs) <= TARGET_GIB
    cpu = statistics.median(run["cpu_seconds"] for run in runs)
    print(
        f"  median: {seconds:.1f} s (CPU {cpu:.1f} s) = {seconds / TARGET_SECONDS:.2f}x the "
        f"{TARGET_SECONDS:.0f} s target "
        f"{verdict(time_ok)}; peak RSS {peak:.2f} GiB (max {max(r['peak_gib'] for r in runs):.2f}) "
        f"= {peak / TARGET_GIB:.2f}x the {TARGET_GIB:.0f} GiB target {verdict(memory_ok)}"
    )

    figures = runs[0]["realism"]
    print(
        f"realism (run 1): annual churn {figures['annual_churn_rate']:.1%}, "
        f"oracle ROC-AUC {figures['oracle_roc_auc']:.3f}, "
        f"horizon churn {figures['horizon_churn_rate']:.2%} vs mean truth probability "
        f"{figures['mean_truth_probability']:.2%}; no login in 30 days: precision "
        f"{figures['no_login_30d_precision']:.3f}, recall {figures['no_login_30d_recall']:.3f}, "
        f"fires on {figures['no_login_30d_fire_rate']:.1%} of {figures['observation_rows']:,} rows; "
        f"median lead {figures['median_lead_days']:.0f} days (IQR {figures['lead_iqr_days']:.0f}); "
        f"{figures['n_events']:,} events"
    )
    realism_ok = True
    for name, (low, high) in REALISM_BOUNDS.items():
        inside = low <= figures[name] <= high
        realism_ok &= inside
        if not inside:
            print(f"  {name} = {figures[name]:.3f} is outside [{low}, {high}] MISSED")
    return 0 if time_ok and memory_ok and realism_ok else 1


if __name__ == "__main__":
    sys.exit(main())
