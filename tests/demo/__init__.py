"""Tests of the demo report, the plant-scale model and the benchmark runner."""
