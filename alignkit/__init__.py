"""alignkit: align language models with preferences and judgments."""

__version__ = "0.1.0"
