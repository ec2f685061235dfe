"""`python -m ml_assets.reproduce VERSION`: rebuild a registered model from its lineage and compare."""
