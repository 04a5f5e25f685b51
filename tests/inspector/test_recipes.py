"""Packaging: recipe templates valid against the GDK schema, and the component build."""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.tiny_model import build_tiny_package

REPO = Path(__file__).resolve().parents[2]
EDGE = REPO / "edge_component"


def _load_build() -> Any:
    """edge_component/build.py by path (``build`` is also the name of a PyPI package)."""
    spec = importlib.util.spec_from_file_location("lineguard_component_build", EDGE / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


component_build = _load_build()
RECIPES = EDGE / "recipes"
SCHEMA = REPO.parent / "shared" / "schemas" / "gdk-recipe-schema.json"


def lower_keys(value: Any) -> Any:
    """What the GDK does before validating: lowercase every key, recursively (keys only)."""
    if isinstance(value, dict):
        return {str(k).lower(): lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lower_keys(v) for v in value]
    return value


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    if not SCHEMA.is_file():
        pytest.fail(
            f"GDK recipe schema not found at {SCHEMA}: CI expects shared/ beside the clone "
            "(<repo>/../shared/schemas/gdk-recipe-schema.json)"
        )
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def rendered(name: str, version: str = "1.2.3") -> dict[str, Any]:
    text = (RECIPES / f"{name}.yaml").read_text()
    out = component_build.render_recipe(text, name=name, version=version, bucket="my-bucket")
    return component_build.check_recipe(out, where=name, name=name, version=version)


@pytest.mark.parametrize("template", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_every_recipe_template_validates_against_the_gdk_schema(
    template: str, validator: jsonschema.Draft7Validator
) -> None:
    name = template.removesuffix(".yaml")
    doc = rendered(name)
    errors = sorted(validator.iter_errors(lower_keys(doc)), key=lambda e: list(e.path))
    assert not errors, f"{template}: {errors[0].message} at {list(errors[0].path)}"


def test_schema_catches_a_broken_recipe(validator: jsonschema.Draft7Validator) -> None:
    doc = rendered("com.lineguard.Inspector")
    del doc["ComponentVersion"]
    doc["Manifests"][0]["Artifacts"][0]["Unarchive"] = "TARGZ"
    assert len(list(validator.iter_errors(lower_keys(doc)))) == 2


def test_inspector_recipe_contract() -> None:
    doc = rendered("com.lineguard.Inspector")
    dep = doc["ComponentDependencies"]["com.lineguard.Model"]
    assert dep["DependencyType"] == "HARD" and dep["VersionRequirement"] == ">=1.0.0 <2.0.0"
    manifest = doc["Manifests"][0]
    # startup, not run: RUNNING only once the inspector reports it after the model checks
    assert "run" not in manifest["Lifecycle"]
    run = manifest["Lifecycle"]["startup"]["Script"]
    assert "--model {com.lineguard.Model:artifacts:decompressedPath}/model" in run
    assert "--device {iot:thingName}" in run and "--transport greengrass" in run
    assert "--require-model" in run and "--identity shadow" in run
    # the ring's deployment sets the ring (stacks/deployment_spec.py); "" renders as --ring=
    assert "--ring={configuration:/ring}" in run
    assert doc["ComponentConfiguration"]["DefaultConfiguration"]["ring"] == ""
    # identity never comes from a ring's configuration
    for flag in ("--plant", "--line", "--station", "--cameras"):
        assert flag not in run, flag
    install = manifest["Lifecycle"]["install"]["Script"]
    assert install == (
        "sh {artifacts:decompressedPath}/inspector/install-device.sh {work:path}"
        " {artifacts:decompressedPath}/inspector"
    )
    assert (
        manifest["Artifacts"][0]["URI"]
        == "s3://my-bucket/com.lineguard.Inspector/1.2.3/inspector.zip"
    )
    acl = doc["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    upstream = acl["aws.greengrass.ipc.mqttproxy"]["com.lineguard.Inspector:mqttproxy:1"]
    assert upstream["operations"] == ["aws.greengrass#PublishToIoTCore"]
    assert upstream["resources"] == [
        "lineguard/+/+/+/{iot:thingName}/results",
        "lineguard/+/+/+/{iot:thingName}/health",
    ]
    acks = acl["aws.greengrass.ipc.mqttproxy"]["com.lineguard.Inspector:mqttproxy:2"]
    assert acks["operations"] == ["aws.greengrass#SubscribeToIoTCore"]
    assert acks["resources"] == ["lineguard/+/{iot:thingName}/ack"]
    local = acl["aws.greengrass.ipc.pubsub"]["com.lineguard.Inspector:pubsub:1"]
    # local pub/sub matches `+` literally (nucleus WildcardTrie): only `*` spans a station
    assert local["resources"] == [
        "lineguard/local/*/reject",
        "lineguard/local/*/verdict",
        "lineguard/local/*/heartbeat",
    ]
    shadow = acl["aws.greengrass.ShadowManager"]["com.lineguard.Inspector:shadow:1"]
    assert shadow["operations"] == ["aws.greengrass#GetThingShadow"]
    assert shadow["resources"] == ["$aws/things/{iot:thingName}/shadow/name/lineguard-identity"]
    every = json.dumps(acl)
    assert '"*"' not in every
    # every {configuration:/x} the run script uses has a default
    defaults = doc["ComponentConfiguration"]["DefaultConfiguration"]
    import re

    for key in re.findall(r"\{configuration:/(\w+)\}", run):
        assert key in defaults, key
    # sample uploads: credentials from the token exchange service, HARD as the developer
    # guide's example (its port is chosen when it starts, so the inspector restarts with it)
    tes = doc["ComponentDependencies"]["aws.greengrass.TokenExchangeService"]
    assert tes == {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"}
    assert defaults["sampleUploads"] == {"enabled": True, "bucket": "", "holdHours": 8}
    assert '--upload-bucket="{configuration:/sampleUploads/bucket}"' in run
    assert "--uploads={configuration:/sampleUploads/enabled}" in run
    assert "--upload-hold-hours {configuration:/sampleUploads/holdHours}" in run


def test_model_recipe_contract() -> None:
    doc = rendered("com.lineguard.Model")
    artifact = doc["Manifests"][0]["Artifacts"][0]
    assert artifact["URI"] == "s3://my-bucket/com.lineguard.Model/1.2.3/model.zip"
    assert artifact["Unarchive"] == "ZIP" and artifact["Permission"]["Read"] == "ALL"


def make_wheel(directory: Path, name: str = "lineguard_probe", version: str = "0.1.0") -> Path:
    """A minimal valid pure-Python wheel (so the build test needs no network)."""
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
        ).encode(),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: lineguard-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = f"{name}-{version}.dist-info/RECORD"
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(data)}")
    lines.append(f"{record},,")
    files[record] = ("\n".join(lines) + "\n").encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def test_build_inspector_offline_from_a_prepopulated_cache(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements-device.txt"
    requirements.write_text("# device pins\nlineguard-probe==0.1.0\n")
    cache_root = tmp_path / "cache"
    cache = component_build.cache_dir_for(requirements, cache_root)
    cache.mkdir(parents=True)
    make_wheel(cache)
    (cache / ".complete").write_text("lineguard-probe==0.1.0\n")
    specs = {s.name: s for s in component_build.load_specs(bucket="test-bucket")}
    built = component_build.build_component(
        specs["com.lineguard.Inspector"],
        tmp_path / "components",
        requirements=requirements,
        wheel_cache=cache_root,
        offline=True,
        log=lambda _: None,
    )
    version = json.loads((EDGE / "gdk-config.json").read_text())["component"][
        "com.lineguard.Inspector"
    ]["version"]
    assert built.directory == tmp_path / "components" / "com.lineguard.Inspector" / version
    assert built.uri == f"s3://test-bucket/com.lineguard.Inspector/{version}/inspector.zip"
    recipe = yaml.safe_load(built.recipe.read_text())
    assert recipe["ComponentVersion"] == version
    assert recipe["Manifests"][0]["Artifacts"][0]["URI"] == built.uri
    with zipfile.ZipFile(built.artifact) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unzipped" / "inspector")
    assert "inspector/service.py" in names and "inspector/journal.py" in names
    assert "wheels/lineguard_probe-0.1.0-py3-none-any.whl" in names
    assert "requirements-device.txt" in names
    assert "install-device.sh" in names and "device-runtime.txt" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # the install lifecycle, for real: pip with no index, only the bundled wheels
    root = tmp_path / "unzipped" / "inspector"
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-index", "--find-links", str(root / "wheels"), "-r",
         str(root / "requirements-device.txt"), "--target", str(target)],
        check=True, timeout=120,
    )  # fmt: skip
    assert (target / "lineguard_probe" / "__init__.py").exists()
    # the shipped package imports nothing from the rest of the repository
    repo_packages = {"stacks", "training", "rollout", "tests", "demo", "app", "bench"}
    for path in (root / "inspector").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            for mod in mods:
                assert mod.split(".")[0] not in repo_packages, f"{path.name} imports {mod}"
    # deterministic: rebuilding gives the same bytes (artifact digests stay stable)
    first = built.artifact.read_bytes()
    again = component_build.build_component(
        specs["com.lineguard.Inspector"], tmp_path / "components", requirements=requirements,
        wheel_cache=cache_root, offline=True, log=lambda _: None,
    )  # fmt: skip
    assert again.artifact.read_bytes() == first


def test_offline_build_without_cache_fails_clearly(tmp_path: Path) -> None:
    requirements = tmp_path / "req.txt"
    requirements.write_text("lineguard-probe==0.1.0\n")
    specs = {s.name: s for s in component_build.load_specs()}
    with pytest.raises(component_build.BuildError, match="not cached"):
        component_build.build_component(
            specs["com.lineguard.Inspector"], tmp_path / "out", requirements=requirements,
            wheel_cache=tmp_path / "empty", offline=True, log=lambda _: None,
        )  # fmt: skip
    requirements.write_text("numpy>=2\n")
    with pytest.raises(component_build.BuildError, match="not pinned"):
        component_build.cache_dir_for(requirements, tmp_path)


def test_build_model_component_from_a_model_package(tmp_path: Path) -> None:
    package = build_tiny_package(tmp_path / "pkg")
    specs = {s.name: s for s in component_build.load_specs(bucket="b")}
    built = component_build.build_component(
        specs["com.lineguard.Model"], tmp_path / "components",
        requirements=tmp_path / "unused", wheel_cache=tmp_path / "unused",
        model_package=package.root, log=lambda _: None,
    )  # fmt: skip
    version = package.manifest.version
    assert built.version == version
    assert built.uri == f"s3://b/com.lineguard.Model/{version}/model.zip"
    with zipfile.ZipFile(built.artifact) as archive:
        assert {"model.onnx", "manifest.json"} <= set(archive.namelist())
    with pytest.raises(component_build.BuildError, match="--model-package"):
        component_build.build_component(
            specs["com.lineguard.Model"], tmp_path / "c2", requirements=tmp_path / "x",
            wheel_cache=tmp_path / "x", log=lambda _: None,
        )  # fmt: skip


def test_cli_reports_unknown_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert component_build.main(["--component", "com.example.Nope"]) == 2
    assert "not in" in capsys.readouterr().err


def test_inspector_default_configuration_passes_its_own_validation() -> None:
    from inspector.component_config import validate_component_config
    from inspector.runtime_config import ConfigError, RuntimeConfig

    defaults = rendered("com.lineguard.Inspector")["ComponentConfiguration"]["DefaultConfiguration"]
    validate_component_config(defaults, RuntimeConfig())  # a deployment merging nothing is valid
    with pytest.raises(ConfigError, match="maxFrames: must be an integer"):
        validate_component_config({**defaults, "maxFrames": 1.5}, RuntimeConfig())
    with pytest.raises(ConfigError, match="ring: 'x y' is not a ring name"):
        validate_component_config({**defaults, "ring": "x y"}, RuntimeConfig())
    uploads = defaults["sampleUploads"]
    validate_component_config(
        {**defaults, "sampleUploads": {**uploads, "bucket": "lineguard-artifacts-1-eu-west-1"}},
        RuntimeConfig(),
    )
    for bad, message in (
        ({"bucket": "Not_A_Bucket"}, "sampleUploads.bucket: 'Not_A_Bucket' is not an S3 bucket"),
        ({"bucket": "a..b"}, "is not an S3 bucket"),
        ({"enabled": "yes"}, "sampleUploads.enabled: must be true or false"),
        ({"holdHours": 200}, "sampleUploads.holdHours: 200 is outside 0..168"),
        ({"prefix": "x"}, "sampleUploads.prefix: unknown setting"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_component_config(
                {**defaults, "sampleUploads": {**uploads, **bad}}, RuntimeConfig()
            )
    # identity is never configuration: a ring deployment that sets it is refused
    for key in ("plant", "line", "station", "cameras"):
        with pytest.raises(ConfigError, match=f"{key}: not configuration"):
            validate_component_config({**defaults, key: "x"}, RuntimeConfig())


def test_string_settings_reach_the_inspector_as_one_argument_each(tmp_path: Path) -> None:
    """The startup script as the nucleus runs it (core_device's interpolation, then sh -c)."""
    from core_device.layout import Layout
    from core_device.recipes import Interpolator, ResolvedService, parse_recipe
    from inspector import service

    name = "com.lineguard.Inspector"
    doc = rendered(name)
    recipe = parse_recipe(doc, where=name)
    configuration = json.loads(json.dumps(doc["ComponentConfiguration"]["DefaultConfiguration"]))
    # values validation refuses (spaces): the run line must still not split them
    configuration["imagesDir"] = "/srv/line 1/frames"
    configuration["reviewStation"].update(
        operatorsFile="/var/lib/line guard/ops.json",
        tlsCert="/etc/lg/cert one.pem",
        tlsKey="/etc/lg/key one.pem",
    )
    layout = Layout(tmp_path)
    python = layout.work_path(name) / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done\n')
    python.chmod(0o755)
    script = Interpolator(paths=layout, thing_name="dev-1").interpolate(
        doc["Manifests"][0]["Lifecycle"]["startup"]["Script"],
        component=name,
        version=recipe.version,
        dependencies=[],
        services={name: ResolvedService(recipe, configuration, {})},
        with_configuration=True,
    )
    assert "{configuration:" not in script
    done = subprocess.run(["sh", "-c", script], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    argv = done.stdout.decode().split("\0")[:-1]
    assert argv[:4] == ["-u", "-m", "inspector", "run"]
    args = service._parser().parse_args(argv[4:])
    assert str(args.images) == "/srv/line 1/frames"
    assert args.review_operators == "/var/lib/line guard/ops.json"
    assert (args.review_tls_cert, args.review_tls_key) == (
        "/etc/lg/cert one.pem",
        "/etc/lg/key one.pem",
    )
    assert args.review_port == 8088 and args.review_session_hours == 8.0
    assert args.review_allow_plain_http == "false"
    assert (args.uploads, args.upload_bucket, args.upload_hold_hours) == ("true", "", 8.0)


def _artifact_with_probe(tmp_path: Path) -> Path:
    """The Inspector artifact built offline with one probe wheel, unzipped as the nucleus does."""
    requirements = tmp_path / "requirements-device.txt"
    requirements.write_text("lineguard-probe==0.1.0\n")
    cache_root = tmp_path / "cache"
    cache = component_build.cache_dir_for(requirements, cache_root)
    cache.mkdir(parents=True)
    make_wheel(cache)
    (cache / ".complete").write_text("lineguard-probe==0.1.0\n")
    specs = {s.name: s for s in component_build.load_specs(bucket="test-bucket")}
    built = component_build.build_component(
        specs["com.lineguard.Inspector"], tmp_path / "components", requirements=requirements,
        wheel_cache=cache_root, offline=True, log=lambda _: None,
    )  # fmt: skip
    root = tmp_path / "unzipped" / "inspector"
    with zipfile.ZipFile(built.artifact) as archive:
        archive.extractall(root)
    return root


def _install(root: Path, work: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path is not None else dict(os.environ)
    return subprocess.run(["/bin/sh", str(root / "install-device.sh"), str(work), str(root)],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip


def test_install_step_installs_once_and_is_skipped_at_the_next_start(tmp_path: Path) -> None:
    root = _artifact_with_probe(tmp_path)
    work = tmp_path / "work"
    first = _install(root, work)
    assert first.returncode == 0, first.stderr
    venv_python = work / "venv" / "bin" / "python"
    probe = subprocess.run([str(venv_python), "-c", "import lineguard_probe as p; print(p.VALUE)"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert probe.stdout.strip() == "42"
    before = (work / "venv" / ".lineguard-installed").stat().st_mtime_ns
    again = _install(root, work)  # the nucleus runs install at every start
    assert again.returncode == 0 and "already installed" in again.stdout
    assert (work / "venv" / ".lineguard-installed").stat().st_mtime_ns == before


def test_install_step_names_the_python_the_device_lacks(tmp_path: Path) -> None:
    root = _artifact_with_probe(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text("#!/bin/sh\necho 3.9\n")  # a device whose python3 is 3.9
    fake.chmod(0o755)
    for tool in ("sed", "uname", "cat", "rm"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    result = _install(root, tmp_path / "work", path=str(bin_dir))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()  # one clear line
    assert "needs Python 3.11 with venv" in line and "python3=3.9" in line


def test_install_step_refuses_wheels_of_another_architecture(tmp_path: Path) -> None:
    root = _artifact_with_probe(tmp_path)
    runtime = root / "device-runtime.txt"
    other = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    runtime.write_text(runtime.read_text().replace(f"arch={platform.machine()}", f"arch={other}"))
    result = _install(root, tmp_path / "work")
    assert result.returncode == 1
    assert f"wheels are for {other}, this device is {platform.machine()}" in result.stderr


def test_model_component_can_carry_a_shadow_model(tmp_path: Path) -> None:
    primary = build_tiny_package(tmp_path / "primary", version="1.4.0")
    shadow = build_tiny_package(tmp_path / "shadow", version="2.0.0-rc1", name="candidate")
    specs = {s.name: s for s in component_build.load_specs(bucket="test-bucket")}
    build = dict(requirements=tmp_path / "none.txt", wheel_cache=tmp_path / "cache",
                 offline=True, log=lambda _: None)  # fmt: skip
    built = component_build.build_component(
        specs["com.lineguard.Model"], tmp_path / "out", model_package=primary.root,
        shadow_package=shadow.root, **build,
    )  # fmt: skip
    with zipfile.ZipFile(built.artifact) as archive:
        names = set(archive.namelist())
    assert {"manifest.json", "model.onnx", "shadow/manifest.json", "shadow/model.onnx"} <= names
    (shadow.root / "manifest.json").write_text("{}")
    with pytest.raises(component_build.BuildError, match="--shadow-package"):
        component_build.build_component(
            specs["com.lineguard.Model"], tmp_path / "out", model_package=primary.root,
            shadow_package=shadow.root, **build,
        )  # fmt: skip
