"""LineGuard's cloud side: plant configuration, deployment specs and the CDK stacks.

``stacks.config`` and ``stacks.deployment_spec`` are plain Python (no ``aws_cdk``), so the
rollout controller can import them without Node. Only ``stacks.shared``, ``stacks.plant`` and
``stacks.constructs`` import the CDK.
"""
