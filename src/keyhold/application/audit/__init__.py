"""Audit use cases: recording attempt → outcome, and reading and verifying the trail."""
