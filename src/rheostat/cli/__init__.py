"""The command line. Commands other than `simulate`, `run` and `demo` talk to a server over its API."""
