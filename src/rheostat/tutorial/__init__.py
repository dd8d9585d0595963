"""`rheostat tutorial`: lessons on the sandbox (Git, `rheostat run`, Envoy, local processes), each checked."""
