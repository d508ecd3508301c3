"""Experiment grids (paper 000) and their reports: plan, train, register, tabulate."""
