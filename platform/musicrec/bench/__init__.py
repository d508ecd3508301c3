"""Benchmarks (docs/benchmarks.md): each compares two implementations in the same run."""
