"""The bus's ``redis-server`` as a supervised child: ``python -m sapphire_cli.bus_server``.

It starts the project's ``RedisServer`` and lives exactly as long as the server does, so the
supervisor sees a crash of redis-server as this process's exit (its exit code, or 128 + the
signal that killed the server) and can stop both, a single process group, with one signal.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from sapphire_bus.server import RedisServer
from sapphire_domain.errors import SapphireError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sapphire_cli.bus_server")
    parser.add_argument("--dir", type=Path, required=True, help="data folder (AOF, logs)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = RedisServer(args.dir, port=args.port).start()
    except SapphireError as error:
        print(f"redis-server did not start: {error}", file=sys.stderr, flush=True)
        return 2
    print(f"redis-server listening on {server.url}", flush=True)
    assert server.process is not None
    while not stop.wait(0.2):
        code = server.process.poll()
        if code is not None:
            print(f"redis-server exited with code {code}", file=sys.stderr, flush=True)
            return code if code >= 0 else 128 - code
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
