"""Venues behind one interface: the paper venue (embedded default) and any ccxt exchange."""
