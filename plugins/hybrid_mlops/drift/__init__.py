"""Drift maths: per-feature statistics, distances and tests, verdicts, model quality, cooldown.

Nothing here does I/O; the drift hook reads the data and the operators write the reports.
"""
