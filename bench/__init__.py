"""Benchmarks: measured figures beside a baseline in the same run. ``make bench`` runs them."""
