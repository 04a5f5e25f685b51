"""What the training pipeline reads from the artifact bucket, published by the Shared stack."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from constructs import Construct

from stacks.constructs.artifact_publisher import ArtifactPublisher
from training.pipeline import SAMPLE_DATA_PREFIX, code_key, package_code, sample_dataset


class TrainingAssets(Construct):
    """The steps' ``sourcedir.tar.gz`` at ``code_key()`` and the sample dataset under
    ``datasets/sample/`` — where ``training.pipeline`` expects them by default.

    Attributes:
        code_key: object key of the steps' code.
        sample_prefix: prefix of the sample dataset (the pipeline's default ``InputData``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        publisher: ArtifactPublisher,
        sample_data: Path | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.code_key = code_key()
        self.sample_prefix = SAMPLE_DATA_PREFIX
        staged = Path(tempfile.mkdtemp(prefix="lineguard-training-code-"))
        try:  # the asset is copied into the cloud assembly here, so the staging dir can go
            archive = staged / "sourcedir.tar.gz"
            package_code(archive)
            # the key names the code's digest: new code gets a new key, never other bytes
            publisher.publish_file("Code", path=archive, key=self.code_key)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        publisher.publish_tree(
            "SampleData", path=sample_data or sample_dataset(), prefix=self.sample_prefix
        )
