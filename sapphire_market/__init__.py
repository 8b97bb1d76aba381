"""Market data clients: live exchanges through ccxt, the replay exchange and synthetic markets.

These are I/O clients without Dagster, so the assets and the execution service share them.
"""
