"""The execution service's settings: one YAML file plus the environment, typed and frozen.

``SAPPHIRE_EXEC_CONFIG`` names the file (optional: every field has a default). The environment
supplies what differs between deployments and every secret, never the file:

  REDIS_URL               the bus; unset means the service starts its own redis-server (embedded)
  SAPPHIRE_STATE_DIR      where state lives (journal, risk state, paper book); default ``var``
  SAPPHIRE_CONTROL_TOKEN  bearer token of the control API (no token: the control API refuses all)
  EXCHANGE_API_KEY, EXCHANGE_SECRET, EXCHANGE_PASSWORD   ccxt credentials

Secrets are ``SecretStr``: they print as ``**********`` in logs and reprs.

An example file::

    consumer: exec-1
    tick_seconds: 1.0
    on_shutdown: cancel          # or "leave": what to do with open orders on SIGTERM
    http: {host: 0.0.0.0, port: 9464}
    orders: {no_trade_band: 0.01, min_notional: 10.0, lot_size: 1.0e-6}
    venue:
      kind: paper                # or "ccxt"
      paper: {timeframe: 30m, initial_cash: 100000, cost: {taker_fee_bps: 5, slippage_bps: 1}}
      ccxt: {exchange: aster, sandbox: true}
    risk: {max_drawdown: 0.1}    # any RiskConfig field
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from sapphire_domain.errors import ConfigError
from sapphire_domain.fill_model import CostModel
from sapphire_domain.settings import PROJECT_ROOT


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HttpSettings(_Frozen):
    """host (str, 127.0.0.1) and port (int, 9464; 0 turns the HTTP server off)."""

    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, lt=65536)


class OrderSettings(_Frozen):
    """How targets become orders (see ``sapphire_domain.orders.plan_orders``).

    no_trade_band (float, 0.0): fraction of equity below which a difference is not traded.
    min_notional (float, 10.0): quote notional below which an order is dropped.
    lot_size (float, 1e-6): lot size of every symbol without its own entry in ``lot_sizes``.
    lot_sizes (dict, {}): symbol -> lot size.
    """

    no_trade_band: float = Field(default=0.0, ge=0)
    min_notional: float = Field(default=10.0, ge=0)
    lot_size: float = Field(default=1e-6, ge=0)
    lot_sizes: dict[str, float] = Field(default_factory=dict)

    def lot_for(self, symbols: list[str]) -> dict[str, float]:
        return {s: self.lot_sizes.get(s, self.lot_size) for s in symbols}


class PaperSettings(_Frozen):
    """The paper venue.

    market (replay|synthetic, replay): the price source: the bundled replay exchange, or a
        synthetic market (for benchmarks) of ``synthetic_symbols`` symbols.
    timeframe (str, 30m): candles whose latest close is the fill price.
    replay_clock_file (path, ``$SAPPHIRE_STATE_DIR/replay_clock.json``): the shared replay clock.
    initial_cash (float, 100000): starting cash in the quote currency.
    fsync (bool, true): fsync the venue's book on every order.
    cost: the fill model's costs, the backtester's ``CostModel`` itself (same fields, same
        checks), so paper trading and backtests cannot drift apart.
    """

    market: Literal["replay", "synthetic"] = "replay"
    synthetic_symbols: int = Field(default=20, gt=0)
    timeframe: str = "30m"
    replay_clock_file: Path | None = None
    initial_cash: float = Field(default=100_000.0, gt=0)
    fsync: bool = True
    cost: CostModel = Field(default_factory=CostModel)


class CcxtSettings(_Frozen):
    """A ccxt exchange.

    exchange (str, binance): ccxt id (``aster`` for Aster).
    sandbox (bool, true): use the exchange's testnet where it has one.
    max_retries (int, 3): retries of a network error, with exponential backoff.
    retry_backoff_s (float, 0.5): the first pause; it doubles on each retry.
    options (dict, {}): extra ccxt constructor options (never secrets: those come from env).
    """

    exchange: str = "binance"
    sandbox: bool = True
    max_retries: int = Field(default=3, ge=0)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)


class VenueSettings(_Frozen):
    kind: Literal["paper", "ccxt"] = "paper"
    paper: PaperSettings = PaperSettings()
    ccxt: CcxtSettings = CcxtSettings()


class ExecSettings(_Frozen):
    """Everything the execution service is configured with.

    redis_url (secret, env REDIS_URL): the bus; None starts an embedded redis-server.
    state_dir (path, ``$SAPPHIRE_STATE_DIR/exec``): journal, risk state, paper book, embedded Redis.
    group (str, sapphire-exec) and consumer (str, exec-1): the consumer group on the targets.
    tick_seconds (float, 1.0): how often prices, equity (the kill switch) and metrics refresh.
    read_batch (int, 256): targets read per bus call; only the newest of a batch is traded
        (the older ones are validated, and acknowledged as superseded with it).
    on_shutdown (cancel|leave, cancel): open orders on SIGTERM/SIGINT.
    reconcile_tolerance (float, 1e-9): largest position difference (base units) accepted
        between the journal and the venue at startup; beyond it the service refuses to trade.
    outbox_compact_seconds (float, 60, at least 2): how often the journal's outbox is
        compacted: a message seen on the bus at one pass is dropped from the journal, and its
        key from the bus's dedupe set, at the next (so long after Redis's once-a-second AOF
        fsync has it on disk).
    risk (dict): ``RiskConfig`` fields. control_token and exchange credentials: env only.
    """

    redis_url: SecretStr | None = None
    state_dir: Path = Path("var/exec")
    group: str = "sapphire-exec"
    consumer: str = "exec-1"
    tick_seconds: float = Field(default=1.0, gt=0)
    read_batch: int = Field(default=256, gt=0)
    on_shutdown: Literal["cancel", "leave"] = "cancel"
    reconcile_tolerance: float = Field(default=1e-9, ge=0)
    outbox_compact_seconds: float = Field(default=60.0, ge=2.0)
    http: HttpSettings = HttpSettings()
    orders: OrderSettings = OrderSettings()
    venue: VenueSettings = VenueSettings()
    risk: dict[str, Any] = Field(default_factory=dict)
    control_token: SecretStr | None = None
    exchange_api_key: SecretStr | None = None
    exchange_secret: SecretStr | None = None
    exchange_password: SecretStr | None = None

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.jsonl"

    @property
    def risk_state_path(self) -> Path:
        return self.state_dir / "risk_state.json"

    @property
    def paper_book_path(self) -> Path:
        return self.state_dir / "paper_venue.jsonl"

    def replay_clock_file(self) -> Path:
        configured = self.venue.paper.replay_clock_file
        return configured or state_root() / "replay_clock.json"


def state_root() -> Path:
    return Path(os.environ.get("SAPPHIRE_STATE_DIR", PROJECT_ROOT / "var"))


def load_exec_settings(
    path: Path | str | None = None, environ: dict[str, str] | None = None
) -> ExecSettings:
    """The settings from ``path`` (or ``SAPPHIRE_EXEC_CONFIG``) and the environment."""
    env = dict(os.environ if environ is None else environ)
    path = path or env.get("SAPPHIRE_EXEC_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read the execution config {path}: {error}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"the execution config {path} must be a mapping")
    secrets = {"control_token", "exchange_api_key", "exchange_secret", "exchange_password"}
    leaked = secrets & set(raw)
    if leaked:
        raise ConfigError(
            f"{sorted(leaked)} must come from the environment, never from the config file"
        )
    raw.setdefault("state_dir", str(state_root() / "exec"))
    from_env = {
        "redis_url": env.get("REDIS_URL"),
        "control_token": env.get("SAPPHIRE_CONTROL_TOKEN"),
        "exchange_api_key": env.get("EXCHANGE_API_KEY"),
        "exchange_secret": env.get("EXCHANGE_SECRET"),
        "exchange_password": env.get("EXCHANGE_PASSWORD"),
    }
    raw.update({k: v for k, v in from_env.items() if v})
    try:
        return ExecSettings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"execution config {path or '(defaults)'}: {error}") from None
