"""Known vulnerabilities in the locked versions of the serving, registry and reporting stack.

`make audit` (run by `make test`, so by CI) calls this. It runs pip-audit against PyPI's advisory data
for each audited package at its version in requirements.lock. Where the registry does not serve
per-version data (pip-audit then skips the package), it reads the project's advisories from the same
registry instead: those list what affects the newest release, and each names the versions that fix it.

Fails (exit 1) on any finding not accepted in audit-accepted.txt, on an accepted entry without a reason,
and when a package could not be audited at all. Only the package registry is contacted.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGES = ("bentoml", "mlflow", "mlflow-skinny", "mlflow-tracing", "evidently")
REGISTRY = "https://pypi.org/pypi"
ACCEPTED_LINE = re.compile(
    r"^(?P<id>[A-Za-z][A-Za-z0-9-]+)\s+(?P<package>\S+)\s+(?P<until>\d{4}-\d{2}-\d{2})\s+(?P<reason>\S.*)$"
)


def locked_versions(lock: Path, packages: list[str]) -> dict[str, str]:
    pins = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock.read_text(), flags=re.M))
    pins = {name.lower(): version for name, version in pins.items()}
    missing = [name for name in packages if name not in pins]
    if missing:
        raise SystemExit(f"audit: {missing} not pinned in {lock}")
    return {name: pins[name] for name in packages}


def accepted_findings(path: Path) -> dict[str, str]:
    accepted: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = ACCEPTED_LINE.match(line.strip())
        if not match:
            raise SystemExit(f"{path}:{number}: want `ID package YYYY-MM-DD reason`, got {line!r}")
        accepted[match["id"]] = match["reason"]
    return accepted


def pip_audit(pins: dict[str, str]) -> tuple[dict[str, list[dict]], list[str]]:
    """Findings per package from pip-audit, and the packages it could not audit."""
    with tempfile.TemporaryDirectory() as folder:
        requirements = Path(folder) / "requirements.txt"
        requirements.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
        report = Path(folder) / "report.json"
        command = [
            str(Path(sys.executable).with_name("pip-audit")), "--no-deps", "--disable-pip",
            "--progress-spinner", "off", "--format", "json", "--output", str(report),
            "--requirement", str(requirements),
        ]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True)
        if not report.is_file():
            raise SystemExit(f"audit: pip-audit failed ({run.returncode}):\n{run.stderr[-2000:]}")
        data = json.loads(report.read_text())
    findings: dict[str, list[dict]] = {}
    skipped: list[str] = []
    for dependency in data["dependencies"]:
        if dependency.get("skip_reason"):
            skipped.append(dependency["name"].lower())
        else:
            findings[dependency["name"].lower()] = [
                {"id": v["id"], "aliases": v.get("aliases", []), "fix": v.get("fix_versions", [])}
                for v in dependency.get("vulns", [])
            ]
    return findings, skipped


def project_advisories(name: str, version: str) -> tuple[list[dict], str]:
    """The project's advisories (they affect its newest release) that the locked version is not past."""
    with urllib.request.urlopen(f"{REGISTRY}/{name}/json", timeout=60) as response:
        data = json.load(response)
    latest = data["info"]["version"]
    found = []
    for advisory in data.get("vulnerabilities") or []:
        if advisory.get("withdrawn"):
            continue
        fixed = advisory.get("fixed_in") or []
        if version in fixed:
            continue
        found.append({"id": advisory["id"], "aliases": advisory.get("aliases") or [], "fix": fixed})
    return found, latest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    parser.add_argument("--accepted", type=Path, default=ROOT / "audit-accepted.txt")
    args = parser.parse_args(argv)
    pins = locked_versions(args.lock, [name.lower() for name in args.packages])
    accepted = accepted_findings(args.accepted)
    findings, skipped = pip_audit(pins)
    for name in skipped:
        found, latest = project_advisories(name, pins[name])
        findings[name] = found
        note = (
            "the project's advisories (the locked version is the newest release)"
            if latest == pins[name]
            else f"the advisories of the newest release, {latest}, instead"
        )
        print(f"audit: {name} {pins[name]}: no per-version data from the registry; checked {note}")
    failed = False
    for name, version in pins.items():
        for finding in findings.get(name, []):
            ids = {finding["id"], *finding["aliases"]}
            reason = next((accepted[i] for i in ids if i in accepted), None)
            if reason:
                print(f"audit: accepted {finding['id']} in {name} {version}: {reason}")
            else:
                failed = True
                fix = ", ".join(finding["fix"]) or "none yet"
                print(
                    f"audit: NEW {finding['id']} {sorted(ids - {finding['id']})} in {name} {version}; "
                    f"fixed in: {fix}"
                )
        if not findings.get(name):
            print(f"audit: {name} {version}: no known vulnerabilities")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
