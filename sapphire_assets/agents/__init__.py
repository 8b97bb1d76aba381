"""Agent forecasts, their models' lifecycle, the coordinator and the target portfolio."""
