"""Dagster checks: the blocking data rules, drift, the model gate that publishes models, and champion decay."""
