"""The Sapphire Dagster code location; ``sapphire_assets.definitions.defs`` is its entry point."""

import warnings

import dagster as dg

# Single-run backfills, look-back mappings that tolerate missing days, and partitioned asset
# checks are chosen on purpose; their beta/preview notices would bury every run's logs.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
