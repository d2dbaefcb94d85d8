"""kocurate: curate Korean instruction-tuning sets and measure what the curation did."""

__version__ = "0.1.0"
