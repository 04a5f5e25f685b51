"""The SageMaker pipeline definition (offline) and the CDK construct that embeds it."""

from __future__ import annotations

import json
import socket
import tarfile
from pathlib import Path
from typing import Any

import pytest

from inspector.model_package import TileSpec
from training import pipeline as pipeline_module
from training.calibration import DEFAULT_TARGET_FALSE_REJECT_RATE, DEFAULT_TARGET_MANUAL_RATE
from training.pipeline import ROLE_PLACEHOLDER, package_code, pipeline_definition

ROLE = "arn:aws:iam::123456789012:role/lineguard-training"


class _NoNetwork(socket.socket):
    def connect(self, address: Any) -> None:  # type: ignore[override]
        raise AssertionError(f"network connection attempted to {address}")

    def connect_ex(self, address: Any) -> int:  # type: ignore[override]
        raise AssertionError(f"network connection attempted to {address}")


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    """The definition built with every socket connection refused (no cache)."""
    original = socket.socket
    socket.socket = _NoNetwork  # type: ignore[misc]
    try:
        text = pipeline_definition("eu-west-1", "lineguard-artifacts-x", role=ROLE, cache_dir=None)
    finally:
        socket.socket = original  # type: ignore[misc]
    return json.loads(text)


def _step(definition: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in definition["Steps"] if s["Name"] == name)


def test_steps_in_order(definition: dict[str, Any]) -> None:
    assert [(s["Name"], s["Type"]) for s in definition["Steps"]] == [
        ("DataCheck", "Processing"),
        ("Train", "Training"),
        ("Evaluate", "Processing"),
        ("RegistrationGate", "Condition"),
    ]
    assert {p["Name"] for p in definition["Parameters"]} == {
        "InputData",
        "MinImageAuroc",
        "TargetFalseRejectRate",
        "TargetManualRate",
        "SplitSeed",
        "ModelVersion",
        "InputRoi",
        "InputFit",
        "InputTiles",
        "InputAlign",
        "Precision",
        "SamplesPrefix",
    }


def _parameter(definition: dict[str, Any], name: str) -> Any:
    return next(p for p in definition["Parameters"] if p["Name"] == name)["DefaultValue"]


def test_train_and_evaluate_take_the_same_target_rates(definition: dict[str, Any]) -> None:
    assert _parameter(definition, "TargetFalseRejectRate") == DEFAULT_TARGET_FALSE_REJECT_RATE
    assert _parameter(definition, "TargetManualRate") == DEFAULT_TARGET_MANUAL_RATE
    hyper = _step(definition, "Train")["Arguments"]["HyperParameters"]
    assert "Parameters.TargetFalseRejectRate" in json.dumps(hyper["target-false-reject-rate"])
    assert "Parameters.TargetManualRate" in json.dumps(hyper["target-manual-rate"])
    args = _step(definition, "Evaluate")["Arguments"]["AppSpecification"]["ContainerArguments"]
    flags = {a: args[i + 1] for i, a in enumerate(args[:-1]) if str(a).startswith("--")}
    assert json.dumps(flags["--target-false-reject-rate"]).count("TargetFalseRejectRate") == 1
    assert json.dumps(flags["--target-manual-rate"]).count("TargetManualRate") == 1
    assert json.dumps(flags["--min-image-auroc"]).count("MinImageAuroc") == 1


def test_train_takes_the_frame_input_from_parameters_untiled_by_default(
    definition: dict[str, Any],
) -> None:
    from training.train import _parser

    hyper = _step(definition, "Train")["Arguments"]["HyperParameters"]
    for flag, name in (("roi", "InputRoi"), ("fit", "InputFit"), ("tiles", "InputTiles")):
        assert f"Parameters.{name}" in json.dumps(hyper[flag])
    defaults = [_parameter(definition, n) for n in ("InputRoi", "InputFit", "InputTiles")]
    args = _parser().parse_args(
        ["--roi", defaults[0], "--fit", defaults[1], "--tiles", defaults[2]]
    )
    assert (args.roi, args.fit, args.tiles) == (None, "stretch", None)  # as before they existed
    args = _parser().parse_args(["--roi", "0,0,100,50", "--fit", "pad", "--tiles", "3x4:0.1"])
    assert (args.roi, args.fit, args.tiles) == ((0, 0, 100, 50), "pad", TileSpec(3, 4, 0.1))


def test_train_takes_registration_from_a_parameter_auto_by_default(
    definition: dict[str, Any],
) -> None:
    from training.train import _parser

    hyper = _step(definition, "Train")["Arguments"]["HyperParameters"]
    assert "Parameters.InputAlign" in json.dumps(hyper["align"])
    default = _parameter(definition, "InputAlign")
    assert _parser().parse_args(["--align", default]).align == "auto"
    assert _parser().parse_args([]).align == default  # the pipeline changes nothing by itself


def test_train_takes_the_backbone_precision_from_a_parameter(definition: dict[str, Any]) -> None:
    from training.train import _parser

    hyper = _step(definition, "Train")["Arguments"]["HyperParameters"]
    assert "Parameters.Precision" in json.dumps(hyper["precision"])
    # float unless the plant sets it: the pipeline knows neither its instance's CPU nor the fleet's
    default = _parameter(definition, "Precision")
    assert _parser().parse_args(["--precision", default]).precision == "float"
    assert _parser().parse_args(["--precision", "int8"]).precision == "int8"


def test_the_data_check_merges_the_samples_prefix_empty_by_default(
    definition: dict[str, Any],
) -> None:
    from training.merge import data_check_main

    assert _parameter(definition, "SamplesPrefix") == ""  # the base dataset alone
    app = _step(definition, "DataCheck")["Arguments"]["AppSpecification"]
    assert app["ContainerEntrypoint"][2].endswith('python sm_data_check.py "$@"')
    args = app["ContainerArguments"]
    assert args[args.index("--samples") + 1] == {"Get": "Parameters.SamplesPrefix"}
    assert args[args.index("--data") + 1] == "/opt/ml/processing/input/data"
    # the entry point the archive carries runs the function that takes these arguments
    entry = pipeline_module._ENTRY.format(
        module=pipeline_module.ENTRY_POINTS["sm_data_check.py"][0],
        function=pipeline_module.ENTRY_POINTS["sm_data_check.py"][1],
    )
    assert "from training.merge import data_check_main" in entry
    assert data_check_main.__module__ == "training.merge"
    # the step's outputs are still the three splits Train and Evaluate read
    outputs = _step(definition, "DataCheck")["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    assert [o["OutputName"] for o in outputs] == ["train", "validation", "test"]


def test_train_reads_the_data_check_splits_in_script_mode(definition: dict[str, Any]) -> None:
    train = _step(definition, "Train")["Arguments"]
    channels = {c["ChannelName"]: c for c in train["InputDataConfig"]}
    assert set(channels) == {"train", "validation"}
    uri = channels["train"]["DataSource"]["S3DataSource"]["S3Uri"]
    assert uri == {"Get": "Steps.DataCheck.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}
    assert json.loads(train["HyperParameters"]["sagemaker_program"]) == "sm_train.py"
    assert train["RoleArn"] == ROLE


def test_evaluate_writes_a_property_file_and_scores_the_test_split(
    definition: dict[str, Any],
) -> None:
    step = _step(definition, "Evaluate")
    assert step["PropertyFiles"][0]["PropertyFileName"] == "EvaluationReport"
    sources = json.dumps(step["Arguments"]["ProcessingInputs"])
    assert "Steps.Train.ModelArtifacts.S3ModelArtifacts" in sources
    assert "Outputs['test']" in sources


def test_gate_registers_pending_approval_with_metrics_or_fails(definition: dict[str, Any]) -> None:
    gate = _step(definition, "RegistrationGate")["Arguments"]
    (condition,) = gate["Conditions"]
    # evaluate decides (rates and, with defect images, AUROC); a null AUROC cannot fail it here
    assert condition["Type"] == "Equals"
    assert condition["LeftValue"]["Std:JsonGet"]["Path"] == "registration_gate.failed"
    assert condition["RightValue"] == 0
    register = gate["IfSteps"][0]
    assert register["Type"] == "RegisterModel"
    assert register["Arguments"]["ModelApprovalStatus"] == "PendingManualApproval"
    assert register["Arguments"]["ModelPackageGroupName"] == "lineguard-inspection"
    assert "evaluation.json" in json.dumps(register["Arguments"]["ModelMetrics"])
    assert [s["Type"] for s in gate["ElseSteps"]] == ["Fail"]


def test_definition_is_cached_by_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = pipeline_module.get_pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "get_pipeline", counting)
    first = pipeline_definition("eu-west-1", "b1", cache_dir=tmp_path)
    again = pipeline_definition("eu-west-1", "b1", cache_dir=tmp_path)
    other = pipeline_definition("us-east-1", "b1", cache_dir=tmp_path)
    assert first == again and len(calls) == 2 and ROLE_PLACEHOLDER in first
    assert "us-east-1" in other


def test_code_package_is_reproducible_and_runnable(tmp_path: Path) -> None:
    first = package_code(tmp_path / "a.tar.gz")
    assert package_code(tmp_path / "b.tar.gz") == first
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = set(tar.getnames())
    assert {
        "sm_train.py",
        "sm_evaluate.py",
        "sm_dataset.py",
        "sm_data_check.py",
        "training/merge.py",
        "requirements.txt",
        "training/train.py",
        "inspector/model_package.py",
    } <= names


def test_construct_embeds_the_definition_with_its_role() -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam
    from aws_cdk.assertions import Match, Template

    from stacks.constructs.training_pipeline import TrainingPipeline

    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "T", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    built = TrainingPipeline(
        stack,
        "Training",
        role=role,
        bucket_name="lineguard-artifacts-x",
        model_package_group_name="lineguard-inspection",
    )
    template = Template.from_stack(stack)
    pipelines = template.find_resources("AWS::SageMaker::Pipeline")
    assert len(pipelines) == 1
    props = next(iter(pipelines.values()))["Properties"]
    assert props["PipelineName"] == built.pipeline_name
    body, variables = props["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"]
    assert "Fn::GetAtt" in variables["RoleArn"]
    parsed = json.loads(body.replace("${RoleArn}", ROLE))
    assert [s["Name"] for s in parsed["Steps"]][-1] == "RegistrationGate"
    assert _step(parsed, "Train")["Arguments"]["RoleArn"] == ROLE
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": [
                    Match.object_like(
                        {"Action": "s3:GetObject", "Resource": {"Fn::Join": Match.any_value()}}
                    )
                ]
            }
        },
    )
    assert built.code_uri.startswith("s3://lineguard-artifacts-x/pipeline/code/")


def test_construct_defaults_the_target_rates_to_its_calibration() -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam
    from aws_cdk.assertions import Template

    from stacks.config import Calibration
    from stacks.constructs.training_pipeline import TrainingPipeline

    app = cdk.App(builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "T", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    TrainingPipeline(
        stack,
        "Training",
        role=role,
        bucket_name="lineguard-artifacts-x",
        model_package_group_name="lineguard-inspection",
        calibration=Calibration(target_false_reject_rate=0.002, target_manual_rate=0.01),
    )
    (pipeline,) = Template.from_stack(stack).find_resources("AWS::SageMaker::Pipeline").values()
    body, _ = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"]
    parsed = json.loads(body.replace("${RoleArn}", ROLE))
    assert _parameter(parsed, "TargetFalseRejectRate") == 0.002
    assert _parameter(parsed, "TargetManualRate") == 0.01
