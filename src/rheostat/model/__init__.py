"""Typed declarations: the kinds Rheostat reads, their loading and validation."""
