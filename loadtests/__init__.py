"""Locust scenarios speaking protocol v1 over real WebSockets (see docs/operations.md, "Load tests")."""
