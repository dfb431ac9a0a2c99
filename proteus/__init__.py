"""Proteus: the CLI, run folders, reports and benchmarks."""

__version__ = "0.1.0"
