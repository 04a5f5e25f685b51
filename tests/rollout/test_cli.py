"""``python -m rollout``: exit codes, progress, release and state directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from moto import mock_aws

from rollout.cli import main
from stacks.config import load_plant_release

from .conftest import REPO


def run(*argv: str) -> int:
    return main(list(argv))


def dirs(releases_dir: Path, tmp_path: Path) -> list[str]:
    return ["--releases-dir", str(releases_dir), "--state-dir", str(tmp_path / "state")]


def models(plant, releases_dir: Path) -> dict[str, str]:
    release = load_plant_release(plant, releases_dir)
    return {r: e.components["com.lineguard.Model"] for r, e in release.rings.items()}


def test_promote_good_as_a_real_process(demo_plant, releases_dir, tmp_path, make_package) -> None:
    package = make_package("1.1.0")
    committed = (REPO / "releases" / "demo.json").read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "rollout", "promote", "--plant", "demo"]
        + ["--model-package", str(package.root), "--simulate", "good"]
        + dirs(releases_dir, tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("completed: com.lineguard.Model 1.1.0")
    assert "canary: every gate passed" in proc.stderr
    assert models(demo_plant, releases_dir) == {"canary": "1.1.0", "fleet": "1.1.0"}
    assert (REPO / "releases" / "demo.json").read_text() == committed
    report = json.loads((tmp_path / "state" / "demo.report.json").read_text())
    assert report["status"] == "completed"


@pytest.mark.parametrize("scenario", ["crash", "reject-all", "reject-none", "slow"])
def test_promote_bad_exits_1_names_the_gate_and_rolls_back(
    demo_plant, releases_dir, tmp_path, make_package, capsys, scenario
) -> None:
    package = make_package("1.1.0")
    code = run(
        "promote", "--plant", "demo", "--model-package", str(package.root),
        "--simulate", scenario, "--json", *dirs(releases_dir, tmp_path),
    )  # fmt: skip
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "rolled-back"
    gate = report["failed_gates"][0]
    assert gate["ring"] == "canary" and gate["gate"] in report["message"]
    assert gate["value"] is not None and gate["limit"] is not None
    assert models(demo_plant, releases_dir) == {"canary": "1.0.0", "fleet": "1.0.0"}


def test_promote_undecided_exits_4_and_prints_the_figures(
    releases_dir, tmp_path, make_package, capsys
) -> None:
    plants = tmp_path / "plants"
    plants.mkdir()
    text = (REPO / "plants" / "demo.yaml").read_text()
    assert "  min_inspections: 50\n" in text
    (plants / "demo.yaml").write_text(
        text.replace("min_inspections: 50", "min_inspections: 999999")
    )
    package = make_package("1.1.0")
    code = run(
        "promote", "--plant", "demo", "--plants-dir", str(plants),
        "--model-package", str(package.root), "--simulate", "good", *dirs(releases_dir, tmp_path),
    )  # fmt: skip
    assert code == 4
    out = capsys.readouterr().out
    # an undecided shadow phase hands over to the bake, whose undecided gates pause
    assert out.startswith("inconclusive: canary: the gates could not decide")
    assert "??   canary: reject_rate: reject rate" in out and "minimum 999999" in out


def test_dry_run_prints_requests_and_writes_nothing(
    releases_dir, tmp_path, make_package, capsys
) -> None:
    package = make_package("1.1.0")
    before = (releases_dir / "demo.json").read_text()
    code = run(
        "promote", "--plant", "demo", "--model-package", str(package.root), "--dry-run",
        *dirs(releases_dir, tmp_path),
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    requests = json.loads(out[: out.index("\ndry-run")])
    assert requests["canary"]["components"]["com.lineguard.Model"]["componentVersion"] == "1.1.0"
    assert (releases_dir / "demo.json").read_text() == before
    assert not (tmp_path / "state").exists()


def test_status_and_rollback(demo_plant, releases_dir, tmp_path, make_package, capsys) -> None:
    package = make_package("1.1.0")
    common = ["--plant", "demo", *dirs(releases_dir, tmp_path)]
    assert run("status", *common) == 0
    assert "no promotion recorded" in capsys.readouterr().out
    assert run("promote", "--model-package", str(package.root), "--simulate", "good", *common) == 0
    capsys.readouterr()
    assert run("status", *common) == 0
    out = capsys.readouterr().out
    assert (
        "canary: aws.greengrass.Nucleus 2.16.1, aws.greengrass.ShadowManager 2.3.12, "
        "com.lineguard.Inspector 1.0.0, com.lineguard.LineBridge 1.0.0, com.lineguard.Model 1.1.0"
    ) in out
    assert "last promotion: 1.1.0 completed" in out
    assert run("rollback", "--simulate", *common) == 0
    assert models(demo_plant, releases_dir) == {"canary": "1.0.0", "fleet": "1.0.0"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plant", "nowhere", "--model-package", "x"], "unknown plant 'nowhere'"),
        (["--plant", "demo", "--model-package", "/nonexistent"], "directory not found"),
        (["--plant", "demo", "--model-package", "PKG"], "--artifact-bucket is required"),
        (
            ["--plant", "demo", "--model-package", "arn:aws:sagemaker:x", "--simulate", "good"],
            "needs a model package directory",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    releases_dir, tmp_path, make_package, capsys, argv, message
) -> None:
    package = make_package("1.1.0")
    argv = [str(package.root) if a == "PKG" else a for a in argv]
    assert run("promote", *argv, *dirs(releases_dir, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_rollback_without_state_exits_2(releases_dir, tmp_path, capsys) -> None:
    assert run("rollback", "--plant", "demo", "--simulate", *dirs(releases_dir, tmp_path)) == 2
    assert "no promotion to roll back" in capsys.readouterr().err


def test_aws_error_exits_3(releases_dir, tmp_path, capsys, monkeypatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/lineguard-inspection/7"
    with mock_aws():
        code = run(
            "promote", "--plant", "demo", "--model-package", arn, "--artifact-bucket", "b",
            *dirs(releases_dir, tmp_path),
        )  # fmt: skip
    assert code == 3
    err = capsys.readouterr().err.strip()
    # against AWS the release is read from, and written to, the artifact bucket by default
    assert "release of demo from s3://b/rollout/releases/" in err
    last = err.splitlines()[-1]
    assert last.startswith("error: sagemaker.describe_model_package") and arn in last


def test_help_lists_commands_and_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("promote", "status", "rollback", "Exit codes"):
        assert word in out


def test_ci_workflow_commands_parse_with_this_cli() -> None:
    import shlex

    import yaml

    from rollout.cli import _parser

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "promote-model.yml").read_text())
    commands = []
    for step in workflow["jobs"]["promote"]["steps"]:
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            if "python -m rollout" in line:
                commands.append(line.strip())
    # the workflow only starts the CodeBuild promotion and follows it (docs/rollout.md, CI)
    assert len(commands) == 1 and "start-promotion" in commands[0]
    for command in commands:
        argv = shlex.split(command.replace("$", "X"))
        args = _parser().parse_args(argv[3:])  # raises SystemExit on an unknown option
        assert args.plant == "XPLANT" and args.follow_minutes <= 50
    credentials = next(
        s for s in workflow["jobs"]["promote"]["steps"]
        if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials")
    )  # fmt: skip
    # the role GitHub may assume is the starter, and its session covers the follow
    assert "LINEGUARD_PROMOTION_STARTER_ROLE_ARN" in credentials["with"]["role-to-assume"]
    assert int(credentials["with"]["role-duration-seconds"]) >= 50 * 60
    assert workflow["jobs"]["promote"]["timeout-minutes"] >= 50


def test_paused_or_killed_simulated_run_resumes_in_a_new_process(
    releases_dir, tmp_path, make_package, capsys
) -> None:
    import pickle

    package = make_package("1.1.0")
    common = ["--plant", "example-large", "--devices", "300", *dirs(releases_dir, tmp_path)]
    promote = ["promote", "--model-package", str(package.root), "--simulate", "good", *common]
    assert run(*promote, "--stop-after-ring", "early") == 0
    assert capsys.readouterr().out.startswith("paused:")
    release = json.loads((releases_dir / "example-large.json").read_text())
    assert {r: e["components"]["com.lineguard.Model"] for r, e in release["rings"].items()} == {
        "canary": "1.1.0",
        "early": "1.1.0",
        "broad": "1.0.0",
    }
    # a new process: the simulated fleet and the controller state come back from --state-dir
    assert run(*promote) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("completed:")
    assert "canary: already passed, not redeployed" in captured.err
    assert "early: already passed, not redeployed" in captured.err
    sim = pickle.loads((tmp_path / "state" / "example-large.simulator.pickle").read_bytes())
    targets = [
        req["targetArn"].rsplit("-", 1)[1] for name, req in sim.calls if name == "create_deployment"
    ]
    # every ring deployed exactly once; the canary first got the shadow carrier
    assert targets == ["canary", "canary", "early", "broad"]
    assert (
        run(
            "promote",
            "--stop-after-ring",
            "nope",
            "--model-package",
            str(package.root),
            *common[:2],
            "--simulate",
            "good",
            *dirs(releases_dir, tmp_path),
        )
        == 2
    )
