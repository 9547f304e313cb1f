"""The standard OAuth 2.0 / OIDC surface over HTTP, beside gRPC: each endpoint admits
its calls under its gRPC twin's policy and calls the same use case."""
