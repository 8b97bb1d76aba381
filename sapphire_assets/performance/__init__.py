"""Strategy performance: backtests of the configured strategies, one UTC day per partition."""
