"""The rollout engine: one pure step per tick, with the I/O around it."""
