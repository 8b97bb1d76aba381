"""Fills from the execution service and the feedback that explains each one."""

from sapphire_assets.trades.assets import build_trade_assets

__all__ = ["build_trade_assets"]
