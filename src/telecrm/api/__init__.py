"""The HTTP API (FastAPI): event intake, health, metrics."""
