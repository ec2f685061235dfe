"""Dagster checks: the blocking data rules, drift, and the model gate that publishes models."""
