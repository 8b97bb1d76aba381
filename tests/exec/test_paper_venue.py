"""The paper venue's batch submission fills exactly as one-by-one submission does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sapphire_domain.fill_model import CostModel, MarketState, fill
from sapphire_domain.messages import OrderStatus, Side
from sapphire_domain.orders import OrderIntent
from sapphire_exec.venues.base import VenueRejectedError
from sapphire_exec.venues.paper import MarketPriceFeed, PaperVenue, read_book
from sapphire_market.synthetic_source import SyntheticMarketData


def _venue(path: Path, cost: CostModel) -> PaperVenue:
    source = SyntheticMarketData(n_symbols=6, days=2, timeframe="1m")
    return PaperVenue(MarketPriceFeed(source, "1m"), path, cost, 100_000.0, fsync=False)


def _orders(symbols: list[str]) -> list[OrderIntent]:
    sizes = [0.5, 3.0, 1e-9, 12.25, 0.0123, 7.0]  # 1e-9 is below the lot: rejected by the model
    return [
        OrderIntent(
            f"t1-{i}",
            1,
            symbol,
            Side.BUY if i % 2 else Side.SELL,
            sizes[i % len(sizes)],
            1.0,
            reduces_exposure=False,
        )
        for i, symbol in enumerate(symbols)
    ]


def test_submit_many_fills_exactly_as_submit_and_as_the_fill_model(tmp_path: Path) -> None:
    cost = CostModel(lot_size=1e-6, min_notional=1.0)

    async def run() -> None:
        one, many = _venue(tmp_path / "one.jsonl", cost), _venue(tmp_path / "many.jsonl", cost)
        await one.start()
        await many.start()
        orders = _orders(one.feed.source.list_symbols())
        singly = [await one.submit(o) for o in orders]
        batch = await many.submit_many(orders)
        assert batch == singly
        assert many.positions == one.positions and many.cash == one.cash
        assert read_book(tmp_path / "one.jsonl") == read_book(tmp_path / "many.jsonl")
        for order, placed in zip(orders, singly, strict=True):
            quote = one.feed.quote(order.symbol)
            expected = fill(
                order.signed_quantity,
                MarketState(quote.price, quote.volatility, quote.volume),
                cost,
                "taker",
            )
            if expected is None:
                assert placed.status is OrderStatus.REJECTED and placed.fills == ()
            else:
                (execution,) = placed.fills
                assert execution.quantity == abs(expected.quantity)
                assert execution.price == expected.price and execution.fee == expected.fee
        assert any(o.status is OrderStatus.REJECTED for o in singly)
        # A known client order id, or one repeated within the batch, is refused and recorded.
        fresh = OrderIntent("t2-x", 2, orders[1].symbol, Side.BUY, 1.0, 1.0, False)
        again = await many.submit_many([orders[0], fresh, orders[0]])
        assert isinstance(again[0], VenueRejectedError) and isinstance(again[2], VenueRejectedError)
        assert not isinstance(again[1], VenueRejectedError)
        assert again[1].status is OrderStatus.FILLED
        assert many.duplicates == [orders[0].client_order_id] * 2
        with pytest.raises(VenueRejectedError):
            await one.submit(orders[0])
        await one.close()
        await many.close()

    asyncio.run(run())
