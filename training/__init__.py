"""Training side of LineGuard: dataset layout, sample data, PatchCore model, SageMaker pipeline."""
