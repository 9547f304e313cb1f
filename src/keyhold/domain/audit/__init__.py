"""The audit trail: attempt → outcome records in a verifiable hash chain."""
