"""The typed, versioned messages between the Dagster side and the execution service.

Targets flow from Dagster to the execution service; fills, order events and risk events flow
back. On the bus every message is one Redis stream entry with three fields: ``kind``,
``schema_version`` and ``payload`` (the message as JSON). ``decode`` turns an entry back into a
message or raises ``MalformedMessageError`` saying exactly what is wrong, so the consumer can
dead-letter it and carry on.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sapphire_domain.errors import SapphireError

SCHEMA_VERSION = 1

# Stream names of the bus.
TARGETS_STREAM = "sapphire:targets"
FILLS_STREAM = "sapphire:fills"
ORDERS_STREAM = "sapphire:orders"
RISK_STREAM = "sapphire:risk"
DEAD_LETTER_STREAM = "sapphire:dead_letters"


class MalformedMessageError(SapphireError):
    """A bus entry that is not a valid message of a known kind and schema version."""


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # only orders that reduce exposure
    HALTED = "HALTED"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class TargetPosition(_Message):
    """One symbol's target: a signed fraction of equity (0.25 is long a quarter of equity)."""

    symbol: str = Field(min_length=1)
    weight: FiniteFloat


class TargetPortfolio(_Message):
    """The portfolio the execution service should hold until ``valid_until``.

    version: increases with every target published; an older or repeated version is refused.
    model_versions: agent name -> model version behind the forecasts this target came from.
    partitions: asset name -> partition key(s) this target was computed from.
    reference_prices: symbol -> the price the target was sized at, for the price collar.
    """

    kind: Literal["target_portfolio"] = "target_portfolio"
    version: int = Field(gt=0)
    created_at: AwareDatetime
    valid_until: AwareDatetime
    positions: tuple[TargetPosition, ...]
    model_versions: dict[str, str] = Field(default_factory=dict)
    partitions: dict[str, str] = Field(default_factory=dict)
    reference_prices: dict[str, PositiveFloat] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> TargetPortfolio:
        if self.valid_until <= self.created_at:
            raise ValueError("valid_until must be after created_at")
        symbols = [p.symbol for p in self.positions]
        if len(set(symbols)) != len(symbols):
            raise ValueError("a symbol appears more than once in positions")
        return self

    def weights(self) -> dict[str, float]:
        return {p.symbol: p.weight for p in self.positions}


class Fill(_Message):
    """A trade the venue executed for one of our orders."""

    kind: Literal["fill"] = "fill"
    fill_id: str = Field(min_length=1)
    client_order_id: str = Field(min_length=1)
    target_version: int = Field(gt=0)
    symbol: str
    side: Side
    quantity: PositiveFloat
    price: PositiveFloat
    fee: FiniteFloat  # in the quote currency; negative for a maker rebate
    liquidity: Literal["maker", "taker"]
    venue: str
    ts: AwareDatetime
    reference_price: PositiveFloat | None = None  # the decision price, for slippage analysis


class OrderStatus(StrEnum):
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # by the venue
    DENIED = "denied"  # by the risk engine, before reaching the venue


class OrderEvent(_Message):
    kind: Literal["order_event"] = "order_event"
    client_order_id: str = Field(min_length=1)
    target_version: int = Field(gt=0)
    symbol: str
    side: Side
    quantity: PositiveFloat
    status: OrderStatus
    reason: str | None = None  # the reason code of a denial or rejection
    ts: AwareDatetime


class RiskEvent(_Message):
    """A change of trading state, or a breach that caused one."""

    kind: Literal["risk_event"] = "risk_event"
    state: TradingState
    previous_state: TradingState
    reason: str
    ts: AwareDatetime
    detail: dict[str, FiniteFloat] = Field(default_factory=dict)

    @field_validator("reason")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a risk event must name its reason")
        return value


Message = TargetPortfolio | Fill | OrderEvent | RiskEvent
_KINDS: dict[str, type[_Message]] = {
    "target_portfolio": TargetPortfolio,
    "fill": Fill,
    "order_event": OrderEvent,
    "risk_event": RiskEvent,
}


def encode(message: Message) -> dict[str, str]:
    """The stream entry fields of a message."""
    return {
        "kind": message.kind,
        "schema_version": str(SCHEMA_VERSION),
        "payload": message.model_dump_json(),
    }


def decode(fields: dict[str, str] | dict[bytes, bytes]) -> Message:
    """The message in a stream entry; raises MalformedMessageError naming the problem."""
    text = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    kind = text.get("kind")
    if kind not in _KINDS:
        raise MalformedMessageError(f"unknown message kind {kind!r}; known: {sorted(_KINDS)}")
    if text.get("schema_version") != str(SCHEMA_VERSION):
        raise MalformedMessageError(
            f"{kind}: schema version {text.get('schema_version')!r} is not {SCHEMA_VERSION}"
        )
    payload = text.get("payload")
    if payload is None:
        raise MalformedMessageError(f"{kind}: the entry has no payload")
    try:
        raw = json.loads(payload)
    except json.JSONDecodeError as error:
        raise MalformedMessageError(f"{kind}: payload is not JSON ({error})") from None
    if not isinstance(raw, dict) or raw.get("kind", kind) != kind:
        raise MalformedMessageError(f"{kind}: payload does not describe a {kind}")
    try:
        message = _KINDS[kind].model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()
        )
        raise MalformedMessageError(f"{kind}: {problems}") from None
    return message  # type: ignore[return-value]
