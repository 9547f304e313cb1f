"""Use cases: one handler per operation, speaking to the world only through ports."""
