"""The Redis bus shared by the Dagster side and the execution service (no Dagster in here)."""
