"""Benchmarks: `python -m bench <name>` (or `make bench BENCH_ARGS=<name>`). Results and
the commands that produced them are recorded in docs/benchmarks.md."""
