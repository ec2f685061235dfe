"""Model-quality and speed figures on real TLC data: `python -m benchmarks.run` (or `make bench`)."""
