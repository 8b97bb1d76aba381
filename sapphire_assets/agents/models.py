"""The agent model assets: one per agent, retrained by ``retrain_agents``.

Materialising ``<agent>_model`` trains a challenger on the latest features and labels (and on
stored trade feedback, when any exists: see ``feedback``), saves it to the model store, and runs
the blocking check
``beats_champion``: the challenger is scored with the champion on a holdout window it never saw
(the last ``holdout`` of the data, after an embargo), and promoted only if its log-loss there is
lower. A rejected challenger is retired, the check fails, and nothing downstream of it runs.

Bootstrap for backfills: with ``walk_forward_from`` set, the asset first trains the walk-forward
lineage (one model per ``retrain_every`` from that date) and promotes each in turn, so a backfill
of earlier days forecasts with the models that would have existed then. The lineage trains
without trade feedback: outcomes realised after its cutoffs would leak the future into it.
"""

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from resources.model_store import ModelStoreResource
from sapphire_assets.agents.feedback import read_stored_feedback, usable_feedback, weighted_rows
from sapphire_assets.agents.settings import AgentSettings
from sapphire_assets.metadata import table
from sapphire_domain.agents.labels import LABEL, LABEL_END
from sapphire_domain.agents.models import (
    labelled_features,
    train_lineage,
    train_model,
    validation_metrics,
)
from sapphire_domain.agents.specs import AgentSpec
from sapphire_domain.agents.walk_forward import challenger_windows, lineage_cutoffs
from sapphire_domain.timeframes import timeframe_ms

GROUP = "agent_models"
CHECK = "beats_champion"


class RetrainConfig(dg.Config):
    """as_of: train as if now were this ISO time (default: the end of the features).
    walk_forward_from: ISO date; first bootstrap the walk-forward lineage from there."""

    as_of: str | None = None
    walk_forward_from: str | None = None


def promotion_decision(
    challenger: dict[str, float], champion: dict[str, float] | None
) -> tuple[bool, str]:
    """Promote when there is no champion, or the challenger's holdout log-loss is lower."""
    if champion is None:
        return True, "no champion yet"
    better = challenger["log_loss"] < champion["log_loss"]
    verdict = "beats" if better else "does not beat"
    return better, (
        f"challenger log-loss {challenger['log_loss']:.5f} {verdict} champion "
        f"{champion['log_loss']:.5f} on the holdout"
    )


def build_model_asset(
    spec: AgentSpec,
    agents: AgentSettings,
    timeframe: str,
    feedback_partitions: dg.TimeWindowPartitionsDefinition | None = None,
) -> dg.AssetsDefinition:
    """``feedback_partitions``: the trade_feedback asset's partitions, to read its stored rows;
    None trains without trade feedback."""
    step_ms = timeframe_ms(timeframe)
    wf = agents.walk_forward
    key = dg.AssetKey(f"{spec.name}_model")

    @dg.asset(
        key=key,
        group_name=GROUP,
        kinds={"lightgbm"},
        ins={"features": dg.AssetIn("features")},
        # io_manager: stored trade feedback is read through it (no graph edge, see feedback.py).
        required_resource_keys={"model_store", "io_manager"},
        check_specs=[
            dg.AssetCheckSpec(
                CHECK,
                asset=key,
                blocking=True,
                description="the challenger beats the champion's log-loss on an unseen holdout; "
                "it is promoted if so",
            )
        ],
        description=f"{spec.name} agent model ({spec.kind}): {spec.role}",
    )
    def model_asset(
        context: dg.AssetExecutionContext, config: RetrainConfig, features: pl.DataFrame
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        store_resource: ModelStoreResource = context.resources.model_store
        store = store_resource.store()
        if features.is_empty():
            raise dg.Failure(f"{spec.name}: no features to train on; materialise features first")
        labelled = labelled_features(features.sort("symbol", "ts"), wf.horizon_bars, step_ms)
        last_end = labelled.select(pl.col(LABEL_END).filter(pl.col(LABEL).is_not_null()).max())
        as_of = datetime.fromisoformat(config.as_of) if config.as_of else last_end.item()
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        known = labelled.filter(pl.col(LABEL_END) <= as_of)
        window, holdout_start = challenger_windows(as_of, wf)
        if config.walk_forward_from:
            first = datetime.fromisoformat(config.walk_forward_from).replace(tzinfo=UTC)
            cutoffs = lineage_cutoffs(first, window.cutoff - wf.retrain_every, wf.retrain_every)
            for model in train_lineage(spec, known, cutoffs, wf.train_window, wf.horizon_bars,
                                       agents.model):  # fmt: skip
                store.save(model)
                store.promote(spec.name, model.version)
        stored = (
            read_stored_feedback(context, feedback_partitions, known["ts"].min(), window.cutoff)  # type: ignore[arg-type]
            if feedback_partitions is not None and known.height
            else None
        )
        weighted, feedback = weighted_rows(
            known, usable_feedback(stored, window.cutoff), agents.feedback_boost
        )
        champion_version = store.champion(spec.name)
        challenger = train_model(spec, weighted, window, wf.horizon_bars, agents.model)
        # The manifest keeps what the challenger learnt from (its "parameters" are what it
        # was trained with); the model itself reads none of it. Promoted over a champion, it
        # serves only from as_of on: its promotion saw the outcomes up to then.
        challenger = replace(
            challenger,
            params={**challenger.params, "trade_feedback": feedback},
            available_from=as_of if champion_version else None,
        )
        holdout = known.filter(pl.col("ts") >= holdout_start).drop_nulls(LABEL)
        challenger.metrics = validation_metrics(challenger, holdout)
        if challenger.version not in store.versions(spec.name):
            store.save(challenger)  # an identical model is already stored: keep its record
        champion_metrics = (
            validation_metrics(store.load(spec.name, champion_version), holdout)
            if champion_version
            else None
        )
        promote, reason = promotion_decision(challenger.metrics, champion_metrics)
        if promote:
            store.promote(spec.name, challenger.version)
        else:
            store.reject(spec.name, challenger.version)
        compared = pl.DataFrame(
            [
                {"model": "challenger", "version": challenger.version, **challenger.metrics},
                *(
                    [{"model": "champion", "version": champion_version, **champion_metrics}]
                    if champion_metrics and champion_version
                    else []
                ),
            ]
        )
        context.log.info(f"{spec.name}: {reason}")
        if not feedback["used"]:
            context.log.info(f"{spec.name}: trained without trade feedback ({feedback['reason']})")
        yield dg.AssetCheckResult(
            check_name=CHECK,
            passed=promote,
            description=reason,
            metadata={"holdout_rows": holdout.height, "comparison": table(compared)},
        )
        yield dg.MaterializeResult(
            metadata={
                "challenger": challenger.version,
                "champion": store.champion(spec.name) or "",
                "promoted": promote,
                "training_window": f"{window.start.isoformat()} .. {window.cutoff.isoformat()}",
                "holdout": f"{holdout_start.isoformat()} .. {as_of.isoformat()}",
                "trade_feedback_rows": feedback["rows"],
                "trade_feedback": dg.MetadataValue.json(feedback),
                "features": list(spec.features),
                "holdout_metrics": table(compared),
            }
        )

    return model_asset
