"""Fixtures (to be filled by the issue that needs them)."""
