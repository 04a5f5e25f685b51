"""Component publishing: the build the app accepts, the component versions and artifact copies the
Shared stack declares, the training assets, and that every ring deploys only what exists."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Match, Template
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from stacks.components import (
    CODE_COMPONENTS,
    ComponentArtifact,
    ComponentBuildError,
    PublishedComponents,
    build_initial_model,
    check_release_versions,
    component_build_module,
    load_code_components,
)
from stacks.config import (
    AWS_COMPONENTS,
    INSPECTOR,
    LINE_BRIDGE,
    MODEL,
    PlantConfig,
    Release,
    ReleaseError,
    load_plant_release,
    load_plants,
)
from stacks.constructs.artifact_publisher import RESOURCE_TYPE, ArtifactPublisher
from stacks.constructs.artifact_store import ArtifactStore
from stacks.constructs.component_versions import COMPONENT_VERSION_TYPE, ComponentVersions
from stacks.constructs.training_assets import TrainingAssets
from training.pipeline import code_key, default_code_uri, default_input_data

from .conftest import PLANTS, RELEASES, ROOT

ENV = cdk.Environment(account="123456789012", region="eu-west-1")
BUCKET = "lineguard-artifacts-x"
GDK = json.loads((ROOT / "edge_component" / "gdk-config.json").read_text())["component"]


def recipes(template: Template) -> dict[tuple[str, str], dict[str, Any]]:
    """(name, version) → recipe of every component version in a template."""
    out = {}
    for resource in template.find_resources(COMPONENT_VERSION_TYPE).values():
        recipe = json.loads(resource["Properties"]["InlineRecipe"])
        out[(recipe["ComponentName"], recipe["ComponentVersion"])] = recipe
    return out


def logical_id(template: Template, type_: str, **properties: Any) -> str:
    """The one resource of ``type_`` whose properties contain ``properties``."""
    found = [
        k
        for k, r in template.find_resources(type_).items()
        if all(r["Properties"].get(p) == v for p, v in properties.items())
    ]
    assert len(found) == 1, (type_, properties, found)
    return found[0]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    (root / "good").mkdir()
    (root / "good" / "0.png").write_bytes(b"png")
    return root


@pytest.fixture(scope="module")
def shared(published: PublishedComponents, sample: Path) -> Template:
    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Shared", env=ENV)
    store = ArtifactStore(stack, "Store", bucket_name=BUCKET, access_log_bucket_name="logs-x")
    log_key = kms.Key(stack, "LogKey")
    publisher = ArtifactPublisher(
        stack,
        "Publisher",
        bucket=store.bucket,
        key=store.key,
        log_group_name="/lineguard/shared/artifact-publisher",
        log_key=log_key,
    )
    ComponentVersions(
        stack, "Components", publisher=publisher, bucket_name=BUCKET, components=published.all()
    )
    TrainingAssets(stack, "Training", publisher=publisher, sample_data=sample)
    return Template.from_stack(stack)


# ------------------------------------------------------------------ the component build


def test_the_build_gives_the_gdk_config_versions(components_dir: Path) -> None:
    built = load_code_components(components_dir)
    assert {n: b.version for n, b in built.items()} == {
        n: GDK[n]["version"] for n in CODE_COMPONENTS
    }
    assert (
        built[INSPECTOR].key == f"components/{INSPECTOR}/{GDK[INSPECTOR]['version']}/inspector.zip"
    )


def test_a_missing_build_says_to_run_make_component(tmp_path: Path) -> None:
    with pytest.raises(ComponentBuildError, match=r"is not built \(run `make component`\)"):
        load_code_components(tmp_path)


def test_a_build_of_other_sources_is_refused(tmp_path: Path) -> None:
    build = component_build_module()
    spec = {s.name: s for s in build.load_specs(bucket="b")}[INSPECTOR]
    package = tmp_path / "inspector"
    shutil.copytree(spec.package, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "engine.py").write_text((package / "engine.py").read_text() + "# edited\n")
    build.build_component(
        replace(spec, package=package, wheels=False),
        tmp_path / "components",
        requirements=tmp_path / "unused",
        wheel_cache=tmp_path / "unused",
        log=lambda _line: None,
    )
    with pytest.raises(ComponentBuildError, match="built from other sources than the working tree"):
        load_code_components(tmp_path / "components", names=[INSPECTOR])


def test_an_artifact_changed_after_its_build_is_refused(
    components_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "components"
    shutil.copytree(components_dir, copy)
    zip_path = copy / LINE_BRIDGE / GDK[LINE_BRIDGE]["version"] / "line_bridge.zip"
    zip_path.write_bytes(zip_path.read_bytes() + b"\0")
    with pytest.raises(ComponentBuildError, match="changed since it was built"):
        load_code_components(copy)


def test_published_recipe_names_the_bucket_key_and_digest(published: PublishedComponents) -> None:
    inspector = published.code[INSPECTOR]
    (artifact,) = inspector.published_recipe(BUCKET)["Manifests"][0]["Artifacts"]
    data = inspector.artifact.read_bytes()
    assert artifact["URI"] == f"s3://{BUCKET}/{inspector.key}"
    assert artifact["Digest"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert artifact["Algorithm"] == "SHA-256"
    assert artifact["Unarchive"] == "ZIP"  # the build's own fields stay
    # samples go to the same bucket: the published recipe's default, the build's stays ""
    defaults = inspector.published_recipe(BUCKET)["ComponentConfiguration"]["DefaultConfiguration"]
    assert defaults["sampleUploads"]["bucket"] == BUCKET
    built = inspector.recipe["ComponentConfiguration"]["DefaultConfiguration"]["sampleUploads"]
    assert built["bucket"] == ""
    line_bridge = published.code[LINE_BRIDGE].published_recipe(BUCKET)
    assert "sampleUploads" not in line_bridge["ComponentConfiguration"]["DefaultConfiguration"]


def test_the_initial_model_is_the_shipped_package_built_reproducibly(
    published: PublishedComponents, tmp_path: Path
) -> None:
    from inspector.model_package import load_package

    package = load_package(ROOT / "edge_component" / "initial-model")
    assert (published.model.name, published.model.version) == (MODEL, package.manifest.version)
    again = build_initial_model(tmp_path)
    assert again.sha256 == published.model.sha256


def test_the_initial_model_was_trained_on_the_published_sample_data() -> None:
    from inspector.model_package import load_package
    from training.dataset import load_dataset
    from training.pipeline import sample_dataset

    package = load_package(ROOT / "edge_component" / "initial-model")
    assert load_dataset(sample_dataset()).fingerprint() == package.manifest.data_fingerprint


def test_a_release_naming_an_unpublished_code_version_is_refused(
    published: PublishedComponents, demo: PlantConfig
) -> None:
    release = Release(plant="demo").with_ring("canary", {INSPECTOR: "0.9.0", MODEL: "1.4.0"})
    with pytest.raises(ReleaseError) as info:
        check_release_versions(release, published, "releases/demo.json")
    assert str(info.value) == (
        "releases/demo.json: rings.canary.components.com.lineguard.Inspector: 0.9.0 is not the "
        f"version the Shared stack publishes ({GDK[INSPECTOR]['version']}, "
        "edge_component/gdk-config.json)"
    )


def test_a_model_version_from_the_promotion_job_is_accepted(
    published: PublishedComponents,
) -> None:
    version = GDK[INSPECTOR]["version"]
    release = Release(plant="demo").with_ring("canary", {INSPECTOR: version, MODEL: "7.1.0"})
    check_release_versions(release, published, "releases/demo.json")


# ------------------------------------------------------------------ component versions


def test_every_published_component_is_a_component_version(
    shared: Template, published: PublishedComponents
) -> None:
    assert set(recipes(shared)) == {(a.name, a.version) for a in published.all()}


def test_component_recipes_point_at_their_artifact_in_the_artifact_bucket(
    shared: Template, published: PublishedComponents
) -> None:
    for component in published.all():
        recipe = recipes(shared)[(component.name, component.version)]
        (artifact,) = recipe["Manifests"][0]["Artifacts"]
        assert (
            artifact["URI"]
            == f"s3://{BUCKET}/components/{component.name}/{component.version}/{component.artifact.name}"
        )
        assert artifact["Digest"] == component.digest


def test_each_component_version_depends_on_the_copy_of_its_artifact(
    shared: Template, published: PublishedComponents
) -> None:
    versions = shared.find_resources(COMPONENT_VERSION_TYPE)
    for component in published.all():
        copy = logical_id(shared, RESOURCE_TYPE, Key=component.key)
        (version,) = [
            r
            for r in versions.values()
            if json.loads(r["Properties"]["InlineRecipe"])["ComponentName"] == component.name
        ]
        assert copy in version["DependsOn"]


def test_component_versions_are_retained_on_delete_and_replacement(shared: Template) -> None:
    for resource in shared.find_resources(COMPONENT_VERSION_TYPE).values():
        # ...except when the operation that created them rolls back: the retry would fail on
        # the retained name + version
        assert resource["DeletionPolicy"] == "RetainExceptOnCreate"
        assert resource["UpdateReplacePolicy"] == "Retain"


def test_artifact_copies_carry_the_synthesised_sha256(
    shared: Template, published: PublishedComponents
) -> None:
    for component in published.all():
        shared.has_resource_properties(
            RESOURCE_TYPE,
            {"Mode": "object", "Key": component.key, "Sha256": component.sha256},
        )


def test_changed_bytes_under_one_version_change_a_create_only_property(
    published: PublishedComponents, tmp_path: Path
) -> None:
    """What CloudFormation sees when a version is re-synthesised with other code: a new recipe
    (its digest), and InlineRecipe can only change by creating the name + version again, which
    Greengrass refuses — so the update fails instead of keeping the old bytes."""
    original = published.code[INSPECTOR]
    changed_zip = tmp_path / original.artifact.name
    changed_zip.write_bytes(original.artifact.read_bytes() + b"changed")
    changed = ComponentArtifact(
        original.name,
        original.version,
        original.recipe,
        changed_zip,
        hashlib.sha256(changed_zip.read_bytes()).hexdigest(),
    )
    assert changed.key == original.key
    assert changed.published_recipe(BUCKET) != original.published_recipe(BUCKET)
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("eu-west-1", COMPONENT_VERSION_TYPE)
    assert "/properties/InlineRecipe" in schema.schema["createOnlyProperties"]


# ------------------------------------------------------------------ the publisher's reach


def statements(template: Template) -> list[dict[str, Any]]:
    out = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        out += policy["Properties"]["PolicyDocument"]["Statement"]
    return out


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_publisher_writes_exact_keys_and_only_the_tree_prefix(
    shared: Template, published: PublishedComponents
) -> None:
    written = []
    for s in statements(shared):
        if "s3:PutObject" in as_list(s["Action"]):
            for resource in as_list(s["Resource"]):
                written.append(resource["Fn::Join"][1][-1])
    expected = {f"/{a.key}" for a in published.all()} | {f"/{code_key()}", "/datasets/sample/*"}
    assert set(written) == expected


def test_the_publisher_reads_only_its_assets(shared: Template) -> None:
    for s in statements(shared):
        if s["Action"] == "s3:GetObject":
            for resource in as_list(s["Resource"]):
                assert "*" not in json.dumps(resource), resource


def test_the_publisher_lists_only_the_keys_it_checks(shared: Template) -> None:
    listing = [s for s in statements(shared) if s["Action"] == "s3:ListBucket"]
    prefixes = [s["Condition"] for s in listing]
    assert {"StringLike": {"s3:prefix": "datasets/sample/*"}} in prefixes
    assert all(c.get("StringEquals") or c.get("StringLike") for c in prefixes)


# ------------------------------------------------------------------ training assets


def test_the_training_code_is_published_where_the_pipeline_reads_it(shared: Template) -> None:
    shared.has_resource_properties(RESOURCE_TYPE, {"Mode": "object", "Key": code_key()})
    assert default_code_uri(BUCKET) == f"s3://{BUCKET}/{code_key()}"


def test_the_sample_data_is_published_as_the_pipeline_default_input(shared: Template) -> None:
    shared.has_resource_properties(
        RESOURCE_TYPE, {"Mode": "tree", "Prefix": "datasets/sample/", "Bucket": Match.any_value()}
    )
    assert default_input_data(BUCKET) == f"s3://{BUCKET}/datasets/sample"


# ------------------------------------------------------------------ the whole app


@pytest.fixture(scope="module")
def app_templates(published: PublishedComponents) -> dict[str, Any]:
    from stacks.app import add_stacks

    plants = load_plants(PLANTS)
    app = cdk.App(builtin_cloud_formation_validation=False)
    built = add_stacks(
        app, plants, {p.name: load_plant_release(p, RELEASES) for p in plants}, components=published
    )
    return {"plants": plants, "stacks": built}


def test_every_component_a_ring_deploys_is_published_or_aws_provided(
    app_templates: dict[str, Any],
) -> None:
    built = app_templates["stacks"]
    checked = 0
    for plant in app_templates["plants"]:
        stack = built.plants[plant.name]
        shared = built.shared[(plant.account, plant.region)]
        assert shared in stack.dependencies  # deployed first: the versions exist before use
        published = recipes(Template.from_stack(shared))
        for deployment in (
            Template.from_stack(stack).find_resources("AWS::GreengrassV2::Deployment").values()
        ):
            for name, spec in deployment["Properties"]["Components"].items():
                version = spec["ComponentVersion"]
                if name in AWS_COMPONENTS:
                    assert version in AWS_COMPONENTS[name], (plant.name, name, version)
                else:
                    assert (name, version) in published, (plant.name, name, version)
                checked += 1
    assert checked >= 5 * 5  # demo 2 rings + example-large 3 rings, 5 components each
