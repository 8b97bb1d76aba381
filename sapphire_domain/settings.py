"""Sapphire's configuration file: typed, frozen and checked when it is read.

The universe (exchange, symbols, timeframe) is configuration, not code. ``SAPPHIRE_CONFIG`` names
the file; the default is ``config/sapphire.yaml`` in the project.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sapphire_domain.errors import ConfigError
from sapphire_domain.timeframes import timeframe_ms

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "sapphire.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UniverseSettings(_Frozen):
    """What is traded.

    exchange: a ccxt exchange id (``binance``, ``aster``...), or ``replay`` for the bundled data.
    symbols: unified ccxt symbols such as ``BTC/USD``.
    timeframe: candle length as ccxt spells it (``30m``).
    start: first day of history the platform materialises.
    end: day after the last one (exclusive); empty for an open-ended live universe.
    """

    exchange: str = "replay"
    symbols: tuple[str, ...] = Field(min_length=1)
    timeframe: str = "30m"
    start: date
    end: date | None = None

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        timeframe_ms(value)
        return value

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for symbol in value:
            if "/" not in symbol:
                raise ValueError(f"symbol {symbol!r} is not a unified symbol like 'BTC/USD'")
        if len(set(value)) != len(value):
            raise ValueError("symbols are listed more than once")
        return value


class ReplaySettings(_Frozen):
    """The simulated clock of the replay exchange.

    start: simulated time at which a replay session begins; empty means the end of the data, so
    every bundled candle is visible.
    speed: simulated seconds per wall-clock second (1440 is one simulated day per minute).
    """

    start: datetime | None = None
    speed: float = Field(default=1440.0, gt=0)

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class QualitySettings(_Frozen):
    """Data-quality tolerances.

    max_gap_bars: the longest run of missing candles that passes without a warning. Gaps are
    always reported and never filled.
    """

    max_gap_bars: int = Field(default=12, ge=0)


class AgentsConfig(_Frozen):
    """How each agent forecasts.

    backends: agent name -> ``quant`` (its own model, the default), ``llm_server`` (a vLLM server
    over HTTP, VLLM_BASE_URL) or ``llm_offline`` (the in-process vLLM engine, for backfills).
    An LLM answer that is late, invalid or missing falls back to the quantitative model, marked.
    """

    backends: dict[str, Literal["quant", "llm_server", "llm_offline"]] = Field(default_factory=dict)


class LiveSettings(_Frozen):
    """The live loop's sensors (``sensors/``).

    sensor_interval_s: the least time between two evaluations of a live-loop sensor; the
        Dagster daemon evaluates sensors at most every few seconds whatever this says.
    retrain_after_fills: new fills stored since the last retrain that trigger ``retrain_agents``.
    min_live_hit_rate: an agent whose hit rate on its latest scored day falls below this
        triggers ``retrain_agents`` (skill decay); 0 turns the trigger off.
    min_scored_rows: forecasts an agent needs on that day before its hit rate counts.
    """

    sensor_interval_s: int = Field(default=2, ge=1)
    retrain_after_fills: int = Field(default=200, ge=1)
    min_live_hit_rate: float = Field(default=0.45, ge=0, le=1)
    min_scored_rows: int = Field(default=50, ge=1)


class Settings(_Frozen):
    universe: UniverseSettings
    replay: ReplaySettings = ReplaySettings()
    quality: QualitySettings = QualitySettings()
    agents: AgentsConfig = AgentsConfig()
    live: LiveSettings = LiveSettings()


def parse_settings(raw: Any, source: str) -> Settings:
    """Validate an already parsed mapping; every problem is named with its location."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{source}: invalid configuration: {details}") from None


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate the configuration file."""
    config_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not config_path.is_file():
        raise ConfigError(
            f"configuration file {config_path} does not exist: create it or point "
            "SAPPHIRE_CONFIG at one (config/sapphire.yaml is the default)"
        )
    try:
        raw = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{config_path}: not valid YAML: {error}") from None
    return parse_settings(raw, str(config_path))
