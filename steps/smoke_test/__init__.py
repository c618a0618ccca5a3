"""The smoke test of a staging endpoint."""
