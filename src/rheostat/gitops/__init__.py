"""GitOps: sources, builds and the reconciler that applies a revision all or nothing."""
