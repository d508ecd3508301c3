"""Preprocessing: filters, task sequences, holdout, global temporal split, stats."""
