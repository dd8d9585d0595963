"""Kubernetes: the API port the Kubernetes plugins share, its kinds, an in-memory fake and the real client.

Only the modules of this package and the Kubernetes platform and routers import a Kubernetes client library.
"""
