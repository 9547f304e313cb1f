"""Helpers shared by the tests: databases, servers, proxies, status details."""
