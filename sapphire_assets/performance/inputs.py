"""Optional upstream inputs: an asset that may not have been materialised yet.

Dagster loads every ``AssetIn`` through the IO manager and fails the step when the upstream
table was never written. ``strategy_performance`` and ``live_vs_backtest`` must still run
where the agents chain or the execution service has not: they declare such an upstream as a
``Nothing``-typed ``AssetIn`` (lineage and partition mapping, no automatic load) and load it
here through the run's own ``io_manager``, so it is the same table the upstream writes.
"""

import dagster as dg
import polars as pl


def optional_asset_in(mapping: dg.PartitionMapping) -> dg.AssetIn:
    return dg.AssetIn(partition_mapping=mapping, dagster_type=dg.Nothing)


def load_optional_input(context: dg.AssetExecutionContext, name: str) -> pl.DataFrame | None:
    """The input ``name`` over its mapped partitions; None when its table was never written."""
    key = context.asset_key_for_input(name)
    step = context.op_execution_context.get_step_execution_context()
    resource = step.resolved_run_config.resources.get("io_manager")
    partitions_def = context.asset_partitions_def_for_input(name)
    input_context = dg.build_input_context(
        asset_key=key,
        asset_partitions_def=partitions_def,
        asset_partition_key_range=(
            context.asset_partition_key_range_for_input(name) if partitions_def else None
        ),
        # The upstream's own metadata: the BigQuery manager reads its partition_expr.
        upstream_output=dg.build_output_context(
            asset_key=key,
            definition_metadata=context.job_def.asset_layer.asset_graph.get(key).metadata,
        ),
        resource_config=resource.config if resource is not None else None,
        instance=context.instance,
    )
    try:
        frame = context.resources.io_manager.load_input(input_context)
    except FileNotFoundError:  # never materialised into this warehouse
        return None
    assert isinstance(frame, pl.DataFrame)
    return frame
