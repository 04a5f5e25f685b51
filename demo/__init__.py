"""LineGuard demo: the local plant run, its report and the plant-scale model."""
