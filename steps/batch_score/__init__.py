"""Batch scoring with the latest Approved model version: resolve it, batch transform, summary."""
