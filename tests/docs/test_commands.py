"""Every command README.md and docs/*.md show is run here, so a wrong one fails CI.

The commands come from the documents' ``bash`` blocks (and the ``$`` lines of ``console``
transcripts); each must match one of the runners below, or the test fails naming it. A trailing
``# exit N`` comment is the exit code the command must give. Placeholders (``<account>``,
``<plant>``, ...) take the demo plant's values. AWS calls go to a moto server on loopback
(``AWS_ENDPOINT_URL``), where moto implements the service. Where it does not, the runner says
what it checks instead:

- ``cdk deploy`` (``make deploy``): moto's CloudFormation skips the resource types it does not
  implement (Greengrass v2, IoT thing groups, SageMaker: FACTS.md) and cannot create these
  stacks, so the recipe is read from ``make -n``, its preflight runs against moto, and
  ``cdk list`` with the same selection shows exactly the stacks the deploy would create.
- ``make test`` (this run), ``make demo``, ``make device``, ``make bench``, ``make e2e-line``,
  ``make setup``:
  ``make -n`` proves the target exists with those arguments; CI runs ``make test`` itself and
  ``tests/demo`` runs the demo.
- Synopses (``[--option ...]``, ``<a|b>``, a trailing ``...``) and long-running services (the
  line bridge): ``--help`` of that program must list every option the line shows.
- ``bench/training_accuracy.py``, ``bench/training_memory.py`` and ``bench/rollout_promotion.py``:
  minutes of training over several data sources or 10,000 generated images, and thousands of
  simulated promotions, too slow for the suite (``make bench`` runs them); their options are
  checked as a synopsis.
- ``aws <service> <operation>``: the AWS CLI is not installed; the call is mapped the way the
  CLI maps it (operation and parameter names to botocore's) and validated against botocore's
  model, then sent to moto where moto implements the service.
"""

from __future__ import annotations

import contextlib
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
DOCUMENTS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
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
    "<email>": "quality@example.com",
}


# A line that runs something, wherever it stands (an unlabelled block would hide it).
SHELL_LIKE = r"(\$ |\.venv/|make |npx |python3? -m |aws |sudo |cp |curl )"


@dataclass(frozen=True)
class DocCommand:
    """One command from a document's bash block."""

    where: str  # file:line
    text: str  # placeholders filled in
    exit_code: int = 0  # from a trailing "# exit N"
    block: str = ""  # the whole block it came from (a runner may need a file the block shows)

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)


def doc_commands(document: str) -> list[DocCommand]:
    """The commands of a document (continuations joined, comments dropped)."""
    lines = (ROOT / document).read_text(encoding="utf-8").splitlines()
    commands: list[DocCommand] = []
    kind, pending, start, code, block_start = "", "", 0, 0, 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):  # blocks inside list items are indented
            if kind:
                assert not pending, f"{document}:{number}: a continuation runs past its block"
                kind = ""
            else:
                kind = {"```bash": "bash", "```sh": "bash", "```console": "console"}.get(
                    stripped, "other" if stripped == "```" else stripped[3:]
                )
                block_start = number
            continue
        if kind not in ("bash", "console"):
            # a command in a block of another kind would never run: label it
            assert kind not in ("other",) or not re.match(SHELL_LIKE, stripped), (
                f"{document}:{number}: `{stripped}` is in an unlabelled block; fence it ```bash"
            )
            continue
        if kind == "console":
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        expected = re.search(r"\s#\s*exit (\d+)", stripped)
        text = re.sub(r"\s+#\s.*$", "", stripped).strip()  # a trailing "  # comment"
        if not pending and (not text or text.startswith("#")):
            continue
        if not pending:
            start, code = number, 0
        if expected:
            code = int(expected.group(1))
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        full = pending + text
        pending = ""
        for name, value in PLACEHOLDERS.items():
            full = full.replace(name, value)
        block = "\n".join(lines[block_start:number])
        commands.append(DocCommand(f"{document}:{start}", full, code, block))
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
    url = f'"$(.venv/bin/python -m stacks.release_store url --plant {plant})"'
    steps = [
        f"-m stacks.preflight --plant {plant} --releases-dir {url}",  # nothing built first
        "make component",
        f"npx cdk deploy -c plant={plant} -c releases_dir={url} --all",
    ]
    positions = [recipe.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), recipe
    env = aws_env(endpoint)
    # a first deploy: no artifact bucket yet, so the repository's releases are what rings run
    releases = shell(f"{sys.executable} -m stacks.release_store url --plant {plant}", env).strip()
    assert releases == f"s3://lineguard-artifacts-{ACCOUNT}-{REGION}/rollout/releases/"
    shell(f"{sys.executable} -m stacks.preflight --plant {plant} --releases-dir {releases}", env)
    stacks = shell(
        f"npx cdk list -c plant={plant} -c releases_dir={releases} -c nag=false "
        f"-o {tmp / 'cdk.out'}",
        env,
    )
    assert sorted(stacks.split()) == sorted(
        [f"LineGuard-Shared-{ACCOUNT}-{REGION}", f"LineGuard-Plant-{plant}"]
    )


def deploy_from_s3_releases(command: DocCommand, endpoint: str, tmp: Path) -> None:
    """The app reads the releases the controller keeps in S3: the documented deploy, as
    ``cdk list`` (no deployment), against a bucket holding the demo's release."""
    bucket = f"lineguard-artifacts-{ACCOUNT}-{REGION}"  # the demo plant's artifact bucket
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint,
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    release = (ROOT / "releases" / "demo.json").read_bytes()
    s3.put_object(Bucket=bucket, Key="rollout/releases/demo.json", Body=release)
    assert "-c releases_dir=s3://<artifact bucket>/rollout/releases/ " in command.text
    stacks = shell(
        f"npx cdk list -c releases_dir=s3://{bucket}/rollout/releases/ -c plant=demo "
        f"-c nag=false -o {tmp / 'cdk.out'}",
        aws_env(endpoint),
    )
    assert "LineGuard-Plant-demo" in stacks.split()


def describe_to_file(command: DocCommand, endpoint: str, tmp: Path) -> None:
    # the only rewrite: the request file goes to a temporary directory
    shell(command.text.replace("ring.json", str(tmp / "ring.json")))
    request = json.loads((tmp / "ring.json").read_text())
    assert request["deploymentName"] == "lineguard-demo-canary"


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


# ---- commands that work on files: run in a scratch directory laid out like a checkout


def workdir(tmp: Path) -> Path:
    """A scratch directory with the venv and bench/ linked, plants/ and releases/ copied, a
    model package for ``<package dir>`` and the sample images the inspector docs show."""
    import shutil

    from tests.support.tiny_model import build_tiny_package

    work = tmp / "work"
    if work.exists():
        return work
    work.mkdir()
    for name in (".venv", "bench", "tests"):
        (work / name).symlink_to(ROOT / name)
    for name in ("plants", "releases"):
        shutil.copytree(ROOT / name, work / name)
    build_tiny_package(work / "package")
    samples = work / "samples"
    samples.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(samples / "a.png")
    good = work / "c-full.jpg"
    Image.new("RGB", (64, 64), (90, 90, 90)).save(good)
    (samples / "c.jpg").write_bytes(good.read_bytes()[:-200])  # truncated
    Image.new("CMYK", (64, 64)).save(samples / "d.jpg")
    (samples / "e.png").write_bytes(b"")
    return work


def in_workdir(text: str, work: Path) -> str:
    """The command with its scratch paths: /tmp/… and <package dir> inside the work directory."""
    text = text.replace("/tmp/", f"{work}/tmp/")
    for name in ("<package dir>", "<package>"):
        text = text.replace(name, str(work / "package"))
    return text


def run_in_workdir(command: DocCommand, endpoint: str, tmp: Path) -> None:
    work = workdir(tmp)
    (work / "tmp").mkdir(exist_ok=True)
    proc = subprocess.run(
        in_workdir(command.text, work),
        shell=True,
        cwd=work,
        env=aws_env(endpoint),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == command.exit_code, (
        f"{command.text}: exit {proc.returncode}, not {command.exit_code}\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


def station_password(command: DocCommand, endpoint: str, tmp: Path) -> None:
    """``sudo -u ggc_user python3 -m inspector station-password ...``: run as this user with the
    repository's interpreter (no ggc_user here), the file under ``tmp``, the password on stdin
    (the command reads it there when stdin is not a terminal); the file it writes is the one
    the station reads."""
    from inspector.station_auth import read_station_file

    argv = command.argv
    assert argv[:3] == ["sudo", "-u", "ggc_user"], command.text
    args = argv[3:]
    assert args[:3] == ["python3", "-m", "inspector"], command.text
    target = tmp / "station" / Path(args[args.index("--file") + 1]).name
    target.parent.mkdir(parents=True, exist_ok=True)
    args[args.index("--file") + 1] = str(target)
    proc = subprocess.run(
        [sys.executable, *args[1:]],
        input="correct horse battery\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == command.exit_code, f"{command.text}: {proc.stderr[-2000:]}"
    station = read_station_file(target)
    operator = args[args.index("--operator") + 1]
    assert operator in station.operators
    assert station.operators[operator].verify("correct horse battery")
    assert station.bind == args[args.index("--bind") + 1]
    assert list(station.hosts) == [args[args.index("--host") + 1]]
    assert target.stat().st_mode & 0o777 == 0o600


def photo_data(command: DocCommand, endpoint: str, tmp: Path) -> None:
    """The benchmark's photo sources: generated as documented, each a dataset training takes."""
    from training.dataset import load_dataset
    from training.photo_data import SOURCE_NAMES

    run_in_workdir(command, endpoint, tmp)
    argv = command.argv
    out = workdir(tmp) / argv[argv.index("--out") + 1]
    for name in SOURCE_NAMES:
        assert load_dataset(out / name).defects, name


def inspector_transcript(command: DocCommand, endpoint: str, tmp: Path) -> None:
    work = workdir(tmp)
    text = command.text.replace("/tmp/brick", str(work / "package"))
    proc = subprocess.run(text, shell=True, cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    # the transcript's fail-safe lines, as the docs show them
    for line in (
        "c.jpg: manual (image_truncated:",
        "d.jpg: manual (image_mode: CMYK not in RGB/L/RGBA/I;16/I;16B/I;16L/I)",
        "e.png: manual (image_empty: 0 bytes)",
        "wrote 4 result(s) to results.jsonl",
    ):
        assert line in out, (line, out)


def make_component_with_model(command: DocCommand, endpoint: str, tmp: Path) -> None:
    work = workdir(tmp)
    shell(command.text.replace("<package dir>", str(work / "package")))
    recipes = list((ROOT / "build" / "components" / "com.lineguard.Model").glob("*/recipe.yaml"))
    assert recipes, "make component MODEL=... built no com.lineguard.Model"


def bridge_config(command: DocCommand, endpoint: str, tmp: Path) -> None:
    # the configuration the page shows, in the yaml block above the command
    page = (ROOT / "docs/line-bridge.md").read_text(encoding="utf-8")
    yaml_text = re.search(r"```yaml\n(.*?)```", page, re.S)
    assert yaml_text, "docs/line-bridge.md shows no configuration"
    work = workdir(tmp)
    (work / "bridge.yaml").write_text(yaml_text.group(1))
    out = subprocess.run(
        command.text, shell=True, cwd=work, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr


def plc_simulator(command: DocCommand, endpoint: str, tmp: Path) -> None:
    work = workdir(tmp)
    proc = subprocess.Popen(
        command.argv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # prints {"controller": {...}} when it listens
        assert "controller" in json.loads(first), first
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def merge_field_samples(command: DocCommand, endpoint: str, tmp: Path) -> None:
    """``training.merge`` from the plant's samples prefix: a moto bucket holding a labelled and
    an unlabelled sample as devices upload them, the base generated if an earlier command of
    the page did not; the folder it writes is the documented layout with the sample in it."""
    import shutil

    from training.dataset import load_dataset
    from training.sample_data import PRODUCTS, Size, generate_product

    work = workdir(tmp)
    argv = command.argv
    base = work / argv[argv.index("--base") + 1]
    out = work / argv[argv.index("--out") + 1]
    uri = argv[argv.index("--samples") + 1]
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    brick = next(p for p in PRODUCTS if p.name == "brick")
    if not (base / "good").is_dir():
        generate_product(brick, base, Size(good=12, per_defect_type=1, side=96), seed=0)
    images = tmp / "field"
    if not images.is_dir():
        generate_product(brick, images, Size(good=2, per_defect_type=1, side=96), seed=5)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint,
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    device = "lineguard-demo-DEMO-0001"
    for layout, name in (("good", "0000.png"), ("unlabelled/manual", "0001.png")):
        s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}{device}/{layout}/20250301_P-{name[:4]}_{name[3]}.png",
            Body=(images / "good" / name).read_bytes(),
            Metadata={"part-id": f"P-{name[:4]}", "seq": name[3], "device": device,
                      "label": "good" if layout == "good" else "",
                      "labelled-at": "2025-03-01T10:00:00.000Z"},
        )  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    run_in_workdir(command, endpoint, tmp)
    summary = json.loads((out / "merge.json").read_text())
    assert summary["used"] == {"defect": 0, "good": 1}, summary
    assert summary["unlabelled"] == {"manual": 1}, summary
    assert any(s.path.name.startswith(device) for s in load_dataset(out).good)


def help_lists_options(command: DocCommand, endpoint: str, tmp: Path) -> None:
    """A synopsis or a service: the program's --help lists every option the line shows."""
    argv = [a for a in command.argv if a != "nice"]
    program: list[str] = []
    for arg in argv:  # the program: up to the first option or placeholder
        if (
            arg.startswith(("-", "[", "<"))
            and arg != "-m"
            and not (program and program[-1] == "-m")
        ):
            break
        program.append(arg)
    program[0] = str(ROOT / ".venv/bin/python") if program[0].endswith("python") else program[0]
    out = subprocess.run(
        [*program, "--help"], cwd=workdir(tmp), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command.text))
    offered = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out.stdout))
    missing = sorted(options - offered)  # exact names: --plan is not --plant
    assert options and not missing, f"{' '.join(program)} --help lacks {missing}"


def aws_cli(command: DocCommand, endpoint: str, tmp: Path) -> None:
    """``aws <service> <operation> --param value``: mapped as the AWS CLI maps it."""
    from botocore import xform_name

    argv = command.argv
    service, operation = argv[1], argv[2]
    session = botocore.session.get_session()
    model = session.get_service_model(service)
    names = {xform_name(op).replace("_", "-"): op for op in model.operation_names}
    assert operation in names, f"aws {service}: no operation {operation}"
    op_model = model.operation_model(names[operation])
    params: dict[str, object] = {}
    i = 3
    while i < len(argv):
        key, value = argv[i], argv[i + 1]
        i += 2
        if value.startswith("file://"):
            value = (tmp / Path(value[len("file://") :]).name).read_text()
        if key == "--cli-input-json":
            params.update(json.loads(value))
            continue
        members = {xform_name(m).replace("_", "-"): m for m in op_model.input_shape.members}
        members.update(
            {cli: members[api] for (svc, api), cli in CLI_RENAMES.items() if svc == service}
        )
        assert key[2:] in members, f"aws {service} {operation}: no parameter {key}"
        shape = op_model.input_shape.members[members[key[2:]]]
        if shape.type_name == "list" and getattr(shape.member, "type_name", "") == "structure":
            # the CLI's shorthand for one structure, Name=a,Value=b (awscli shorthand.py)
            value = [dict(pair.split("=", 1) for pair in str(value).split(","))]  # type: ignore[assignment]
        params[members[key[2:]]] = value
    # the CLI (botocore's generate_idempotent_uuid handler) fills idempotency tokens itself
    for member, shape in op_model.input_shape.members.items():
        if shape.metadata.get("idempotencyToken") and member not in params:
            params[member] = "00000000-0000-4000-8000-000000000000"
    report = ParamValidator().validate(params, op_model.input_shape)
    assert not report.has_errors(), report.generate_report()
    client = boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if service == "sns":
        # moto implements it: the topic must exist, as the plant stack names it
        name = str(params["TopicArn"]).rsplit(":", 1)[1]
        plant_stack = ROOT / "cdk.out" / "LineGuard-Plant-demo.template.json"
        assert f'"TopicName": "{name}"' in plant_stack.read_text(), f"no topic {name} is deployed"
        client.create_topic(Name=name)
        answer = getattr(client, xform_name(names[operation]))(**params)
        assert answer["SubscriptionArn"]
    if service == "sagemaker":
        # moto implements it: the pipeline must exist, as cdk deploy makes it
        from training.pipeline import PIPELINE_NAME

        assert params.get("PipelineName") == PIPELINE_NAME
        role = f"arn:aws:iam::{ACCOUNT}:role/lineguard-training"
        listed = client.list_pipelines()["PipelineSummaries"]
        if PIPELINE_NAME not in [p["PipelineName"] for p in listed]:  # a page may start it twice
            client.create_pipeline(
                PipelineName=PIPELINE_NAME,
                PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}),
                RoleArn=role,
            )
        started = getattr(client, xform_name(names[operation]))(**params)
        assert started["PipelineExecutionArn"]


# The AWS CLI's own argument names where they differ from botocore's (awscli
# customizations/argrename.py ARGUMENT_RENAMES, e.g. "sns.subscribe.endpoint":
# "notification-endpoint").
CLI_RENAMES = {("sns", "endpoint"): "notification-endpoint"}

SYNOPSIS = r".*(\[--|<[a-z]+\|[a-z]+>|<dataset>|<out>|\.\.\.\s*$|\"\.\.\.\")"

RUNNERS: tuple[tuple[str, Runner], ...] = (
    (r"\.venv/bin/python -m stacks\.claim ", claim_device),
    (SYNOPSIS, help_lists_options),
    (r"\.venv/bin/python -m training\.merge --base ", merge_field_samples),
    (r"(\.venv/bin/)?python -m line_bridge run ", help_lists_options),
    (r"python -m rollout (promote|status|rollback) ", help_lists_options),  # the synopsis
    (r"nice \.venv/bin/python bench/training_accuracy\.py ", help_lists_options),
    (r"nice \.venv/bin/python bench/training_memory\.py", help_lists_options),
    (r"nice \.venv/bin/python bench/rollout_promotion\.py", help_lists_options),
    (r"\.venv/bin/python -m inspector inspect --model /tmp/brick ", inspector_transcript),
    (r"\.venv/bin/python -m training\.photo_data --out \S+ --size small$", photo_data),
    (r"head -1 results\.jsonl$", run_in_workdir),
    (r"make component MODEL=", make_component_with_model),
    (r"\.venv/bin/python -m line_bridge check-config bridge\.yaml$", bridge_config),
    (r"\.venv/bin/python -m line_bridge\.plc_sim ", plc_simulator),
    (r"\.venv/bin/python edge_component/build\.py ", run_as_documented),
    (
        r"(\.venv/bin/python -m (inspector|training|rollout)\.?\w* |cp -r releases /tmp/)",
        run_in_workdir,
    ),
    (r"\.venv/bin/python (-c |bench/)", run_in_workdir),
    (r"aws (sagemaker|sns) ", aws_cli),
    (r"aws greengrassv2 create-deployment --cli-input-json file://ring\.json$", aws_cli),
    (r"make (test|demo|device|bench|e2e-line|setup)$", dry_run_make),
    (r"\.venv/bin/python -m core_device run --help$", run_as_documented),
    (r"make (synth|component)$", run_as_documented),
    (r"make deploy PLANT=\S+$", make_deploy),
    (r"make bootstrap PLANT=\S+$", run_as_documented),
    (r"npx cdk synth ", run_as_documented),
    (r"npx cdk deploy -c releases_dir=s3://", deploy_from_s3_releases),
    (r"\.venv/bin/python -m stacks\.describe [^|>]*$", run_as_documented),
    (r"\.venv/bin/python -m stacks\.describe .*\| jq .*> ring\.json$", describe_to_file),
    (r"\.venv/bin/python -m stacks\.station ", station_move),
    (r"\.venv/tools/checkov/bin/checkov -d cdk\.out ", run_as_documented),
    (r"sudo -u ggc_user python3 -m inspector station-password ", station_password),
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
    # every page that shows how to run something has its commands here
    assert {c.where.split(":")[0] for c in ALL} >= {
        "README.md",
        "docs/deploy.md",
        "docs/identity.md",
        "docs/inspector.md",
        "docs/line-bridge.md",
        "docs/rollout.md",
        "docs/scanners.md",
        "docs/training.md",
    }
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
