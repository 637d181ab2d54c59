"""Structured logs without PHI, and Prometheus metrics."""
