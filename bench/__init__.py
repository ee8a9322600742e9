"""The benchmark suite of issue 6: `python -m bench.run` (or `make bench`)."""
