"""The reactor: builds the components from one settings object, starts and supervises the long-running tasks."""
