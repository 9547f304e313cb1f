"""Persistence of the identity context: users, sessions and refresh tokens, one-time
tokens, service accounts, signing keys and login failures."""
