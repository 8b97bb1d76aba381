"""The execution service: trades the latest target portfolio through the risk engine and a venue.

It never imports Dagster; it shares only the message contract (``sapphire_domain.messages``) and
the pure domain logic (orders, risk, fill model) with the asset side.
"""
