"""Background jobs: the store, the worker every replica runs, and the actions (GC, ...)."""
