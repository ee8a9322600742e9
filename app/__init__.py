"""gradcheck: a gradient-verification service for softmax and cross-entropy."""

__version__ = "0.1.0"
