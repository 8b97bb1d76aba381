"""The four agents' pure logic: labels, walk-forward windows, models and the forecast contract.

Nothing here does I/O or imports Dagster: the same code trains and forecasts in backfills, in
the live loop and in ``bench/``. Saving models is ``resources.model_store``'s job.
"""
