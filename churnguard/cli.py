"""The `churnguard` command: the one place that wires the parts together.

Each command imports what it needs inside its handler, so `churnguard --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("churnguard")

EXIT_USAGE = 2  # bad configuration or data: the message says which file, column and rows


def _state_path(*parts: str) -> Path:
    from churnguard.settings import state_dir

    return state_dir().joinpath(*parts)


# ---------------------------------------------------------------------------------------------- commands


def cmd_simulate(args: argparse.Namespace) -> int:
    from churnguard.simulate import SimulationConfig, realism, simulate, write

    out = Path(args.out) if args.out else _state_path("sim")
    sim = simulate(SimulationConfig(customers=args.customers, days=args.days, seed=args.seed), progress=True)
    files = write(sim, out)
    facts = realism(sim)
    print(f"simulated {args.customers:,} customers over {args.days} days (seed {args.seed}) into {out}")
    for name, path in files.items():
        print(f"  {name:<22} {path}")
    print(
        "  realism: "
        + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in facts.items())
    )
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from churnguard.datasets import load_dataset_config
    from churnguard.feature_table import build_feature_table

    config = load_dataset_config(args.dataset)
    table = build_feature_table(config)
    out = Path(args.out) if args.out else _state_path("features", f"{config.name}.parquet")
    table.write(out)
    if table.report:
        print(table.report.format())
    frame = table.frame
    positives = float(frame["label"].mean()) if len(frame) else float("nan")
    print(
        f"wrote {len(frame):,} rows x {len(table.schema.features)} features for '{config.name}' to {out} "
        f"(label rate {positives:.1%})"
    )
    for group, names in sorted(table.schema.by_group().items()):
        print(f"  {group:<13} {len(names):>4} features")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from churnguard.validation import validate_dataset

    report = validate_dataset(args.dataset)
    print(report.format())
    return 1 if report.errors else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from churnguard.demo import run_demo

    return run_demo(customers=args.customers, seed=args.seed)


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="churnguard",
        description="Customer-churn early warning: simulate, build features, validate, train, serve, monitor",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sim = command("simulate", cmd_simulate, "simulate a B2B CRM customer base with known churn truth")
    sim.add_argument("--customers", type=int, default=20_000, help="number of customers (default 20000)")
    sim.add_argument("--days", type=int, default=365, help="days simulated (default 365)")
    sim.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data")
    sim.add_argument(
        "--out", help="output folder (default: <state>/sim, which configs/datasets/crm.yaml reads)"
    )

    feat = command("features", cmd_features, "build the point-in-time feature table of a dataset")
    feat.add_argument("--dataset", required=True, help="dataset name in configs/datasets/ or a YAML path")
    feat.add_argument("--out", help="output Parquet file (default: <state>/features/<dataset>.parquet)")

    val = command("validate", cmd_validate, "check a dataset's files and report every problem")
    val.add_argument("--dataset", required=True, help="dataset name in configs/datasets/ or a YAML path")

    demo = command("demo", cmd_demo, "run the main job end to end on embedded defaults")
    demo.add_argument("--customers", type=int, default=20_000, help="simulated customers (default 20000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from churnguard.config import ConfigError
    from churnguard.datasets import DataError

    try:
        return args.handler(args)
    except (ConfigError, DataError) as exc:
        print(f"churnguard {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
