"""The retraining trigger: ``retrain_agents`` when trade feedback has piled up or skill decays.

Two reasons, read from the event log (no warehouse reads in the daemon):

- **feedback**: the fills stored since the last retrain (``new_fills`` of each ``trade_fills``
  run, counted once per run) reach ``live.retrain_after_fills``;
- **decay**: on the latest ``agent_scorecard`` materialisation, an agent with at least
  ``live.min_scored_rows`` scored forecasts has a hit rate below ``live.min_live_hit_rate``.

The cursor records the last event counted of each asset and the fills counted since the last
retrain, so nothing is counted twice; run keys name the event that tipped the balance.
"""

import json
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from sapphire_domain.agents.specs import AGENTS
from sapphire_domain.settings import LiveSettings
from sensors.jobs import REASON_TAG, RETRAIN_AGENTS, load_cursor, unfinished_run

NAME = "retrain_trigger"
FILLS = dg.AssetKey("trade_fills")
SCORECARD = dg.AssetKey("agent_scorecard")
EVALUATION = "out_of_sample_evaluation"
_BATCH = 1000


def _new_events(
    instance: dg.DagsterInstance, key: dg.AssetKey, after: int
) -> list[dg.EventLogRecord]:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after or None),
        limit=_BATCH,
        ascending=True,
    )
    return list(result.records)


def _fills_stored(records: list[dg.EventLogRecord]) -> int:
    """New fills over these materialisations; a range run reports its count on every partition,
    so each run counts once (an event reported without a run counts alone)."""
    per_run: dict[str, int] = {}
    for record in records:
        materialization = record.asset_materialization
        value = materialization.metadata.get("new_fills") if materialization else None
        if value is not None:
            per_run[record.run_id or f"event {record.storage_id}"] = int(value.value)  # type: ignore[arg-type]
    return sum(per_run.values())


def decayed_agents(record: dg.EventLogRecord, live: LiveSettings) -> dict[str, float]:
    """Agent -> hit rate, for agents below the threshold on this scorecard materialisation."""
    materialization = record.asset_materialization
    evaluation = materialization.metadata.get(EVALUATION) if materialization else None
    if not isinstance(evaluation, dg.TableMetadataValue):
        return {}
    decayed = {}
    for row in evaluation.records:
        data = row.data
        agent, hit_rate, n = data.get("agent"), data.get("hit_rate"), data.get("n")
        if agent not in AGENTS or hit_rate is None or not isinstance(n, int):
            continue
        if n >= live.min_scored_rows and float(hit_rate) < live.min_live_hit_rate:
            decayed[str(agent)] = round(float(hit_rate), 4)
    return decayed


def build_retrain_sensor(
    live: LiveSettings, job: dg.JobDefinition | UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    @dg.sensor(
        name=NAME,
        job=job,
        minimum_interval_seconds=max(live.sensor_interval_s, 5),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Retrains the agents on enough new trade feedback, or on decayed live skill.",
    )
    def retrain_trigger(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        busy = unfinished_run(context.instance, job_name=RETRAIN_AGENTS)
        if busy:
            return dg.SkipReason(f"retrain run {busy} has not finished")
        cursor: dict[str, Any] = {"fills_after": 0, "scorecard_after": 0, "new_fills": 0}
        cursor.update(load_cursor(context))
        fill_events = _new_events(context.instance, FILLS, cursor["fills_after"])
        score_events = _new_events(context.instance, SCORECARD, cursor["scorecard_after"])
        if fill_events:
            cursor["new_fills"] += _fills_stored(fill_events)
            cursor["fills_after"] = fill_events[-1].storage_id
        decayed = decayed_agents(score_events[-1], live) if score_events else {}
        if score_events:
            cursor["scorecard_after"] = score_events[-1].storage_id

        reason, key = "", ""
        if cursor["new_fills"] >= live.retrain_after_fills:
            reason = f"feedback: {cursor['new_fills']} new fills since the last retrain"
            key = f"retrain:feedback:{cursor['fills_after']}"
        elif decayed:
            worst = ", ".join(f"{a} {h:.3f}" for a, h in sorted(decayed.items()))
            reason = f"decay: hit rate below {live.min_live_hit_rate} ({worst})"
            key = f"retrain:decay:{cursor['scorecard_after']}"
        if not reason:
            return dg.SensorResult(
                skip_reason=f"{cursor['new_fills']} of {live.retrain_after_fills} fills since "
                "the last retrain; no agent's live skill has decayed",
                cursor=json.dumps(cursor),
            )
        context.log.info(f"retraining the agents: {reason}")
        cursor["new_fills"] = 0
        request = dg.RunRequest(run_key=key, tags={REASON_TAG: reason})
        return dg.SensorResult(run_requests=[request], cursor=json.dumps(cursor))

    return retrain_trigger
