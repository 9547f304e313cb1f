"""Rate-limit counter storage for the `limits` library."""
