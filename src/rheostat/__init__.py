"""Rheostat: progressive delivery with GitOps."""

__version__ = "0.1.0"
