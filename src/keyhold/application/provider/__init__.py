"""Provider use cases: the catalog, connecting, and keeping credentials fresh."""
