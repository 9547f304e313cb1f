"""Delivering notices to account owners."""
