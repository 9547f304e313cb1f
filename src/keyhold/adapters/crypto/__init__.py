"""Cryptographic adapters: encryption at rest, signing keys, access tokens."""
