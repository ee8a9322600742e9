"""The `make accuracy` report (see report.py)."""
