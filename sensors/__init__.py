"""Sensors and schedules of the live loop."""
