"""Plugins behind small Protocols, one explicit registry per family. A plugin never imports an engine."""
