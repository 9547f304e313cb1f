"""Persistence of the audit trail: the hash-chained records, batched appends and the
feed of new ones."""
