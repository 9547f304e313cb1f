"""Calling providers' OAuth 2.0 endpoints over HTTP."""
