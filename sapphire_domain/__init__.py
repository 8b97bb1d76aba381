"""Pure domain logic of Sapphire.

Nothing in this package imports Dagster, the execution service or an I/O client (exchange, database,
message bus), so the same code serves backtests, assets and live trading.
"""
