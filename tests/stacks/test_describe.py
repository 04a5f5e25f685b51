"""`python -m stacks.describe`: what would be deployed, with no CDK and no AWS account."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stacks import describe

from .conftest import PLANTS, ROOT


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = describe.main(list(argv), out=out)
    return code, out.getvalue()


def test_text_lists_groups_rings_deployments_and_policies() -> None:
    code, text = run("--plant", "demo")
    assert code == 0
    assert "lineguard-demo-line-line-1" in text
    assert "canary" in text and "50 %" in text
    assert "lineguard-demo-canary -> arn:aws:iot:eu-west-1:123456789012:thinggroup/" in text
    assert "com.lineguard.Inspector 1.0.0" in text
    assert "failure handling ROLLBACK" in text
    assert "No abort criteria on these standing deployments" in text
    assert "when FAILED >= 50 % (after 1 executed)" in text
    assert "topic/lineguard/demo/*/*/lineguard-demo-<serial>/*" in text


def test_json_has_one_deployment_spec_per_ring() -> None:
    code, text = run("--plant", "example-large", "--json")
    assert code == 0
    info = json.loads(text)
    assert list(info["deployments"]) == ["canary", "early", "broad"]
    assert all(
        d["deploymentPolicies"]["failureHandlingPolicy"] == "ROLLBACK"
        for d in info["deployments"].values()
    )
    assert len(info["thing_groups"]["lines"]) == 40
    # what the Plant stack deploys: no abort criteria; the rollout's are listed apart
    assert all("abortConfig" not in d["iotJobConfiguration"] for d in info["deployments"].values())
    assert info["rollout_abort"][0] == {
        "failureType": "FAILED",
        "thresholdPercentage": 5,
        "minNumberOfExecutedThings": 20,
    }
    assert sum(info["thing_groups"]["line_stacks"].values()) == 40


def test_unknown_plant_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("--plant", "nope")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "unknown plant 'nope'" in err and "\n" not in err


def test_missing_release_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("--plant", "demo", "--releases-dir", str(tmp_path))
    assert code == 2
    assert "demo.json: release file not found" in capsys.readouterr().err


def test_runs_without_the_cdk() -> None:
    # The rollout CLI and `make demo` import these modules where Node may be missing.
    code = (
        "import sys; sys.modules['aws_cdk'] = None; sys.modules['cdk_nag'] = None\n"
        "from stacks import describe, config, deployment_spec\n"
        f"sys.exit(describe.main(['--plants-dir', {str(PLANTS)!r}, "
        f"'--releases-dir', {str(ROOT / 'releases')!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "Plant example-large" in proc.stdout


def test_environment_is_what_cdk_bootstrap_takes() -> None:
    code, text = run("--plant", "demo", "--plant", "example-large", "--environment")
    assert code == 0
    assert text == "aws://123456789012/eu-west-1\n"  # both plants share one environment
