"""The management API, /api/v0: thin FastAPI handlers over `wharf.management` services."""
