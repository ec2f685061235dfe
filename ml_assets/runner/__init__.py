"""`python -m ml_assets.runner`: the command line that `make run` and `make backfill` call."""
