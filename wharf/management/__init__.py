"""Domain services behind the management API (/api/v0) and the operator CLI."""
