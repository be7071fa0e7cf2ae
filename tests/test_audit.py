"""Security properties checked from the source: the dependency audit is wired into `make test`, the
image runs as non-root, nothing on the serving path can unpickle or execute what the registry or a
request sends, and API keys are compared in constant time."""

from __future__ import annotations

import ast
import hmac
import re
import sys
from pathlib import Path

import pytest

from churnguard.settings import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "tools"))

import audit

SERVING_PATH = ["service", "churnguard"]  # what `churnguard serve` imports and runs
UNSAFE_IMPORTS = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "marshal", "shelve"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
UNSAFE_ATTRIBUTES = {
    ("pyfunc", "load_model"),
    ("mlflow", "load_model"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
}


def test_make_test_runs_the_dependency_audit() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\baudit\b", makefile, flags=re.M)
    assert re.search(
        r"^audit: .*\n\t\$\(BIN\)/python tools/audit.py \$\(AUDIT_PACKAGES\)", makefile, flags=re.M
    )
    packages = re.search(r"^AUDIT_PACKAGES := (.*)$", makefile, flags=re.M)[1].split()
    assert {"bentoml", "mlflow", "evidently"} <= set(packages)
    pins = audit.locked_versions(PROJECT_ROOT / "requirements.lock", packages)  # all pinned exactly
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version) for version in pins.values())
    assert "pip-audit" in (PROJECT_ROOT / "pyproject.toml").read_text()


def test_accepted_findings_need_a_reason(tmp_path: Path) -> None:
    assert isinstance(audit.accepted_findings(PROJECT_ROOT / "audit-accepted.txt"), dict)
    good = tmp_path / "accepted.txt"
    good.write_text("# comment\nGHSA-aaaa-bbbb-cccc  mlflow  2027-01-31  only `mlflow server` is affected\n")
    assert audit.accepted_findings(good) == {"GHSA-aaaa-bbbb-cccc": "only `mlflow server` is affected"}
    bad = tmp_path / "bad.txt"
    bad.write_text("GHSA-aaaa-bbbb-cccc mlflow\n")
    with pytest.raises(SystemExit, match="want `ID package YYYY-MM-DD reason`"):
        audit.accepted_findings(bad)


def test_new_findings_fail_the_audit_and_accepted_ones_do_not(monkeypatch, tmp_path: Path, capsys) -> None:
    """The decision logic, with the registry's answers given (the network is the audit's own run)."""
    lock = tmp_path / "requirements.lock"
    lock.write_text("bentoml==1.4.39\nmlflow==3.17.2\n")
    accepted = tmp_path / "accepted.txt"
    accepted.write_text("PYSEC-2099-1  mlflow  2027-01-01  the affected code path is never used\n")
    findings = {"bentoml": [], "mlflow": [{"id": "GHSA-x", "aliases": ["PYSEC-2099-1"], "fix": []}]}
    monkeypatch.setattr(audit, "pip_audit", lambda pins: (findings, []))
    assert audit.main(["bentoml", "mlflow", "--lock", str(lock), "--accepted", str(accepted)]) == 0
    findings["bentoml"] = [{"id": "GHSA-new", "aliases": [], "fix": ["1.4.40"]}]
    assert audit.main(["bentoml", "mlflow", "--lock", str(lock), "--accepted", str(accepted)]) == 1
    assert "NEW GHSA-new" in capsys.readouterr().out


def test_the_image_runs_as_a_non_root_user() -> None:
    lines = [line.strip() for line in (PROJECT_ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0", "0:0"}
    last_user = max(i for i, line in enumerate(lines) if line.startswith("USER "))
    cmd = max(i for i, line in enumerate(lines) if line.startswith(("CMD", "ENTRYPOINT")))
    assert last_user < cmd
    assert re.search(rf"useradd .*--uid \d+ {users[-1]}", "\n".join(lines))


def _python_files() -> list[Path]:
    return [path for folder in SERVING_PATH for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))]


def test_nothing_on_the_serving_path_unpickles_or_executes_loaded_code() -> None:
    problems = []
    for path in _python_files():
        if (
            path.name == "pyfunc_model.py"
        ):  # MLflow's own entry for other consumers; the service never loads it
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(PROJECT_ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                problems += [
                    f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_IMPORTS
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_IMPORTS:
                problems.append(f"{where} imports from {node.module}")
            elif isinstance(node, ast.Call):
                if isinstance(node.func, ast.Name) and node.func.id in UNSAFE_CALLS:
                    problems.append(f"{where} calls {node.func.id}")
                if isinstance(node.func, ast.Attribute) and isinstance(
                    node.func.value, ast.Name | ast.Attribute
                ):
                    owner = (
                        node.func.value.id if isinstance(node.func.value, ast.Name) else node.func.value.attr
                    )
                    if (owner, node.func.attr) in UNSAFE_ATTRIBUTES:
                        problems.append(f"{where} calls {owner}.{node.func.attr}")
                    if node.func.attr in {"read_pickle", "load_model"} and owner in {
                        "pd",
                        "pandas",
                        "mlflow",
                        "pyfunc",
                    }:
                        problems.append(f"{where} calls {owner}.{node.func.attr}")
    assert problems == []


def test_api_keys_are_compared_in_constant_time_against_every_key(monkeypatch) -> None:
    from service import security

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", counting)
    keys = [b"first-key", b"second-key", b"third-key"]
    assert security.key_matches(b"first-key", keys)
    assert len(compared) == 3  # no early exit once the first key matched
    compared.clear()
    assert not security.key_matches(b"nope", keys) and len(compared) == 3
    source = (PROJECT_ROOT / "service" / "security.py").read_text()
    assert "==" not in re.sub(r"#.*", "", source.split("def key_matches")[1].split("def ")[0])
