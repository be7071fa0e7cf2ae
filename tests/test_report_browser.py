"""The HTML drift report in a real headless Chromium: it renders, and it names the drifted feature.

Chromium is Debian's /usr/bin/chromium (or CHURNGUARD_CHROMIUM); `tests/ensure_chromium.sh`, run by
the Makefile's test target, installs it. Without it this test fails and says how to get it: a report
nobody has seen render is not tested. The screenshot is kept in test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from monitoring_fixtures import customer_frame, cut_logins, fit_artifact

from churnguard.artifact import ModelArtifact
from churnguard.settings import PROJECT_ROOT
from churnguard.tracking import ResolvedModel
from monitoring.drift import check_drift
from monitoring.inputs import MonitoredModel, to_schema
from monitoring.policy import load_monitoring_config

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    candidates = [os.environ.get("CHURNGUARD_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")]
    found = next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)
    if found is None:
        pytest.fail(
            "headless Chromium not found (looked at $CHURNGUARD_CHROMIUM, /usr/bin/chromium and PATH); "
            "install it with `bash tests/ensure_chromium.sh` (apt-get install -y chromium)",
            pytrace=False,
        )
    return found


def run_chromium(binary: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def drift_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("model")
    fit_artifact(model_dir, rows=2500, reference_rows=1200, iterations=30)
    artifact = ModelArtifact.load(model_dir)
    model = MonitoredModel(artifact, ResolvedModel(str(model_dir), model_dir, None, "local"), None)
    current = to_schema(cut_logins(customer_frame(2000, seed=41), "smb", 0.4, 1), artifact.schema, "test")
    result = check_drift(
        model, current, load_monitoring_config(environ={}).drift, tmp_path_factory.mktemp("out")
    )
    assert result.drifted_features[0] == "login__count_30d"
    return result.report_path


def test_drift_report_renders_and_names_the_drifted_feature(drift_report: Path, tmp_path: Path) -> None:
    binary = chromium()
    dumped = run_chromium(
        binary, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", drift_report.as_uri()
    )
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    # What the page shows once its JavaScript ran: drop scripts and styles, which hold the raw data.
    shown = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", "", dumped.stdout, flags=re.S)
    assert "MuiPaper" in shown, "Evidently's React app did not render"
    assert "Drift in column 'login__count_30d'" in shown
    assert "Data drift detected" in shown
    assert "Drift detected: 1 of 6 features drifted" in shown  # the churnguard summary on top
    assert re.search(r"<td[^>]*>login__count_30d</td>", shown)

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "drift_report.png"
    screenshot.unlink(missing_ok=True)
    shot = run_chromium(
        binary,
        tmp_path / "profile-shot",
        "--window-size=1280,2400",
        "--virtual-time-budget=10000",
        f"--screenshot={screenshot}",
        drift_report.as_uri(),
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    pixels = matplotlib.image.imread(str(screenshot))
    assert pixels.shape[:2] == (2400, 1280)
    assert float(np.std(pixels[..., :3])) > 0.05, "the screenshot is blank"
