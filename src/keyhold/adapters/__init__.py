"""Implementations of the domain ports: persistence, crypto, rate-limit storage."""
