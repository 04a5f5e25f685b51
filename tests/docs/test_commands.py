"""Every command the deployment docs show is run here, so a wrong one fails CI.

The commands come from the ``bash`` blocks of the documents in ``DOCUMENTS``; each must match
one of the runners below, or the test fails naming it. Placeholders (``<account>``,
``<plant>``, ...) take the demo plant's values. AWS calls go to a moto server on loopback
(``AWS_ENDPOINT_URL``), where moto implements the service. Where it does not, the runner says
what it checks instead:

- ``cdk deploy`` (``make deploy``): moto's CloudFormation skips the resource types it does not
  implement (Greengrass v2, IoT thing groups, SageMaker: FACTS.md) and cannot create these
  stacks, so the recipe is read from ``make -n``, its preflight runs against moto, and
  ``cdk list`` with the same selection shows exactly the stacks the deploy would create.
- ``aws greengrassv2 create-deployment``: moto has no Greengrass v2; the request file the docs
  build is validated against botocore's Greengrass v2 model, as the CLI does before sending it.
- ``make test`` (this run), ``make demo``, ``make bench``, ``make e2e-line``, ``make setup``:
  ``make -n`` proves the target exists with those arguments; CI runs ``make test`` itself and
  ``tests/demo`` runs the demo.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.validate import ParamValidator

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/deploy.md", "docs/identity.md", "docs/scanners.md")
ACCOUNT, REGION = "123456789012", "eu-west-1"  # the demo plant's (moto's default account too)
PLACEHOLDERS = {
    "<account>": ACCOUNT,
    "<region>": REGION,
    "<name>": "demo",
    "<plant>": "demo",
    "<p>": "demo",
    "<ring>": "canary",
    "<serial>": "DEMO-0001",
    "<line>": "line-1",
    "<station>": "final-check",
}


@dataclass(frozen=True)
class DocCommand:
    """One command from a document's bash block."""

    where: str  # file:line
    text: str  # placeholders filled in

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)


def doc_commands(document: str) -> list[DocCommand]:
    """The commands of a document's ``bash`` blocks (continuations joined, comments dropped)."""
    lines = (ROOT / document).read_text(encoding="utf-8").splitlines()
    commands: list[DocCommand] = []
    in_block, pending, start = False, "", 0
    for number, line in enumerate(lines, 1):
        if line.strip().startswith("```"):  # blocks inside list items are indented
            in_block = line.strip() in ("```bash", "```sh") if not in_block else False
            continue
        if not in_block:
            continue
        text = re.sub(r"\s+#\s.*$", "", line).strip()  # a trailing "  # comment"
        if not pending and (not text or text.startswith("#")):
            continue
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        full = pending + text
        pending = ""
        for name, value in PLACEHOLDERS.items():
            full = full.replace(name, value)
        commands.append(DocCommand(f"{document}:{start}", full))
    return commands


# ------------------------------------------------------------------ the AWS stand-in


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """A moto server on loopback; its URL."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # "localhost", not 127.0.0.1: moto's CloudFormation parses S3 template URLs by host name
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("moto_server did not start")
    yield url
    server.terminate()
    server.wait(timeout=10)


def aws_env(endpoint: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=endpoint,
        AWS_EC2_METADATA_DISABLED="true",
        CDK_DISABLE_VERSION_CHECK="true",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="1",
        JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
    )
    return env


def shell(command: str, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    """Run a documented command as the docs show it, from the repository root."""
    proc = subprocess.run(
        command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


# ------------------------------------------------------------------ runners


Runner = Callable[[DocCommand, str, Path], None]


def run_as_documented(command: DocCommand, endpoint: str, tmp: Path) -> None:
    shell(command.text, aws_env(endpoint))


def dry_run_make(command: DocCommand, endpoint: str, tmp: Path) -> None:
    shell(f"make -n {shlex.join(command.argv[1:])}")


def make_deploy(command: DocCommand, endpoint: str, tmp: Path) -> None:
    recipe = shell(f"make -n {shlex.join(command.argv[1:])}")
    plant = dict(a.split("=", 1) for a in command.argv[1:] if "=" in a)["PLANT"]
    assert f"-m stacks.preflight --plant {plant}" in recipe
    assert f"npx cdk deploy -c plant={plant} --all" in recipe
    env = aws_env(endpoint)
    shell(f"{sys.executable} -m stacks.preflight --plant {plant}", env)
    stacks = shell(f"npx cdk list -c plant={plant} -c nag=false -o {tmp / 'cdk.out'}", env)
    assert sorted(stacks.split()) == sorted(
        [f"LineGuard-Shared-{ACCOUNT}-{REGION}", f"LineGuard-Plant-{plant}"]
    )


def describe_to_file(command: DocCommand, endpoint: str, tmp: Path) -> None:
    # the only rewrite: the request file goes to a temporary directory
    shell(command.text.replace("ring.json", str(tmp / "ring.json")))
    request = json.loads((tmp / "ring.json").read_text())
    assert request["deploymentName"] == "lineguard-demo-canary"


def greengrass_create_deployment(command: DocCommand, endpoint: str, tmp: Path) -> None:
    # Built by the describe command that precedes it in the docs (same block).
    path = Path(command.text.split("file://", 1)[1].split()[0])
    request = json.loads((tmp / path.name).read_text())
    model = botocore.session.get_session().get_service_model("greengrassv2")
    report = ParamValidator().validate(
        request, model.operation_model("CreateDeployment").input_shape
    )
    assert not report.has_errors(), report.generate_report()


def station_move(command: DocCommand, endpoint: str, tmp: Path) -> None:
    argv = command.argv
    plant, serial = argv[argv.index("--plant") + 1], argv[argv.index("--serial") + 1]
    iot = boto3.client(
        "iot",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    thing = f"lineguard-{plant}-{serial}"
    group = f"lineguard-{plant}-line-line-1"
    iot.create_thing_group(thingGroupName=group)
    iot.create_thing(
        thingName=thing,
        attributePayload={"attributes": {"line": "line-1", "station": "press-out", "cameras": "1"}},
    )
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
    out = shell(command.text, aws_env(endpoint))
    assert out.startswith(f"{thing}: now ")


def claim_device(command: DocCommand, endpoint: str, tmp: Path) -> None:
    argv = command.argv
    plant = argv[argv.index("--plant") + 1]
    iot = boto3.client(
        "iot",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    # what `make deploy` leaves behind: the plant's claim policy (synthesised document)
    from stacks.config import load_plant
    from stacks.policies import claim_policy_document

    iot.create_policy(
        policyName=f"lineguard-{plant}-provisioning-claim",
        policyDocument=json.dumps(
            claim_policy_document(load_plant(ROOT / "plants" / f"{plant}.yaml"))
        ),
    )
    # the only rewrite: the device's files go to a temporary directory
    out = shell(f"{command.text} --out {tmp / 'device'}", aws_env(endpoint))
    assert "--init-config config.yaml" in out
    assert (tmp / "device" / "config.yaml").is_file()


RUNNERS: tuple[tuple[str, Runner], ...] = (
    (r"\.venv/bin/python -m stacks\.claim ", claim_device),
    (r"make (test|demo|bench|e2e-line|setup)$", dry_run_make),
    (r"make (synth|component)$", run_as_documented),
    (r"make deploy PLANT=\S+$", make_deploy),
    (r"npx cdk bootstrap aws://\d+/[a-z0-9-]+$", run_as_documented),
    (r"npx cdk synth ", run_as_documented),
    (r"\.venv/bin/python -m stacks\.describe [^|>]*$", run_as_documented),
    (r"\.venv/bin/python -m stacks\.describe .*\| jq .*> ring\.json$", describe_to_file),
    (
        r"aws greengrassv2 create-deployment --cli-input-json file://ring\.json$",
        greengrass_create_deployment,
    ),
    (r"\.venv/bin/python -m stacks\.station ", station_move),
    (r"\.venv/tools/checkov/bin/checkov -d cdk\.out ", run_as_documented),
)


def runner_for(command: DocCommand) -> Runner:
    for pattern, runner in RUNNERS:
        if re.match(pattern, command.text):
            return runner
    raise AssertionError(f"{command.where}: no test runs `{command.text}`: add a runner")


ALL = [c for d in DOCUMENTS for c in doc_commands(d)]
# a command shown twice runs once (the first place it appears names it)
UNIQUE = list({c.text: c for c in reversed(ALL)}.values())[::-1]


def test_the_documents_show_commands_and_each_has_a_runner() -> None:
    assert len(ALL) >= 15
    assert {c.where.split(":")[0] for c in ALL} == set(DOCUMENTS)
    for command in ALL:
        runner_for(command)


@pytest.mark.parametrize("command", UNIQUE, ids=[c.where for c in UNIQUE])
def test_documented_command_works(
    command: DocCommand, moto_server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # one directory per document, so a command can use what an earlier one in it wrote
    tmp = tmp_path_factory.getbasetemp() / ("doc-" + command.where.split(":")[0].replace("/", "-"))
    tmp.mkdir(exist_ok=True)
    runner_for(command)(command, moto_server, tmp)
