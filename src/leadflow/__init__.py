"""leadflow: B2B lead management and marketing automation engine."""

__version__ = "0.1.0"
