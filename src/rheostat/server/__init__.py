"""HTTP servers that Rheostat runs: the Flagger-compatible load tester and its hey-style load generator."""
