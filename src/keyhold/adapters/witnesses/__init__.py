"""Witnesses: places outside the database where audit checkpoints are written once and
kept, so that the trail can be compared with them (issue 24)."""
