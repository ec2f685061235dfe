"""Dagster-free data and ML logic: sources, cleaning, features, tuning, training, storage."""
