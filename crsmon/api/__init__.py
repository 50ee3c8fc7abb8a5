"""The HTTP API (FastAPI): intake, patients, grades, alerts, health and metrics."""
