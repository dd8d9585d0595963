"""Notifier plugins and their registry."""
