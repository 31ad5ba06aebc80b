"""ehrseq: models of patient records for rheumatology research."""

__version__ = "0.1.0"
