"""``sapphire exec``: run the execution service until SIGTERM or SIGINT.

Exit codes: 0 after a graceful shutdown, 2 for bad configuration, 3 when startup
reconciliation with the venue fails (the service refuses to trade).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import TextIO

import structlog

from sapphire_bus.server import LOCAL_PORT, RedisServer
from sapphire_domain.errors import ConfigError
from sapphire_exec.bus import ExecutionBus
from sapphire_exec.config import ExecSettings, load_exec_settings
from sapphire_exec.service import ExecutionService, ReconciliationError
from sapphire_exec.venues.base import Venue

log = structlog.get_logger("sapphire_exec")


def configure_logging(stream: TextIO | None = None) -> None:
    """JSON lines on stderr (or ``stream``). Nothing logs settings wholesale, and secrets are
    SecretStr."""
    stream = stream or sys.stderr
    logging.basicConfig(level=logging.INFO, stream=stream, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def settle_heap() -> None:
    """Once started: move everything alive now (modules, compiled kernels, market data, the
    replayed journal) out of the garbage collector's view, so that its collections while
    trading scan only what was made since. No collection first: that would hold up the first
    target by a full pass over the start-up heap."""
    gc.freeze()


def build_venue(settings: ExecSettings) -> Venue:
    if settings.venue.kind == "ccxt":
        from sapphire_exec.venues.ccxt import CcxtVenue

        return CcxtVenue.from_settings(settings)
    from sapphire_exec.venues.paper import MarketPriceFeed, PaperVenue
    from sapphire_market.source import MarketDataSource

    paper = settings.venue.paper
    source: MarketDataSource
    if paper.market == "synthetic":
        from sapphire_market.synthetic_source import SyntheticMarketData

        source = SyntheticMarketData(n_symbols=paper.synthetic_symbols, days=3, timeframe="1m")
    else:
        from sapphire_market.replay import ReplayExchange

        source = ReplayExchange.on_clock_file(settings.replay_clock_file())
    feed = MarketPriceFeed(source, paper.timeframe)
    cost = paper.cost
    return PaperVenue(feed, settings.paper_book_path, cost, paper.initial_cash, fsync=paper.fsync)


async def serve(settings: ExecSettings) -> int:
    embedded: RedisServer | None = None
    if settings.redis_url is None:
        embedded = RedisServer(settings.state_dir / "redis", port=LOCAL_PORT).start()
        url = embedded.url
        log.info("embedded_redis_started", url=url)
    else:
        url = settings.redis_url.get_secret_value()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bus = ExecutionBus(url, settings.group, settings.consumer)
    service = ExecutionService(settings, build_venue(settings), bus)
    runner = None
    try:
        if settings.http.port:
            from sapphire_exec.http import start_http

            runner = await start_http(service, settings.http.host, settings.http.port)
        try:
            await service.start()
        except ReconciliationError as error:
            log.error("refusing_to_trade", error=str(error))
            return 3
        settle_heap()
        await service.run(stop)
        log.info("shutdown_requested")
        return 0
    finally:
        await service.shutdown()
        if runner is not None:
            await runner.cleanup()
        if embedded is not None:
            embedded.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sapphire exec", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML file (default: $SAPPHIRE_EXEC_CONFIG)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = load_exec_settings(args.config)
    except ConfigError as error:
        log.error("bad_config", error=str(error))
        return 2
    try:
        return asyncio.run(serve(settings))
    except ConfigError as error:  # found once running, e.g. a damaged replay clock file
        log.error("bad_config", error=str(error))
        return 2


if __name__ == "__main__":
    sys.exit(main())
