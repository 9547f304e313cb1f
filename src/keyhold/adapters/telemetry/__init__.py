"""Metrics (Prometheus), traces (OpenTelemetry) and where they are served or sent."""
