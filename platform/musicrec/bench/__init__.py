"""Benchmarks (spec performance.md): each compares two implementations in the same run."""
