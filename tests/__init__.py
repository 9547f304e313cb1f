"""Keyhold's tests."""
