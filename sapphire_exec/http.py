"""The service's HTTP port: ``/metrics``, ``/healthz`` and the control API.

The control API (``/control/status``, ``/control/halt``, ``/control/resume``) needs
``Authorization: Bearer <SAPPHIRE_CONTROL_TOKEN>``: no header is 401, a wrong token 403, and with
no token configured every call is refused. Tokens are compared with ``hmac.compare_digest`` and
never logged. Resuming goes through the risk engine's authenticated reset, the only way out of
HALTED.
"""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sapphire_domain.risk import ResetRefusedError
from sapphire_exec.service import ExecutionService

log = structlog.get_logger("sapphire_exec.http")


def build_app(service: ExecutionService) -> web.Application:
    app = web.Application()

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(service.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        healthy = service.ready
        body = {"ready": service.ready, "bus_connected": service.bus_ok}
        return web.json_response(body, status=200 if healthy else 503)

    def authorised(request: web.Request) -> str:
        """The presented token when it is right; raises 401/403 otherwise."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            log.warning("control_refused", path=request.path, why="no bearer token")
            raise web.HTTPUnauthorized(text="a bearer token is required")
        presented = header.removeprefix("Bearer ").strip()
        expected = service.settings.control_token
        if expected is None or not hmac.compare_digest(
            presented.encode(), expected.get_secret_value().encode()
        ):
            log.warning("control_refused", path=request.path, why="wrong token")
            raise web.HTTPForbidden(text="the token is not valid")
        return presented

    async def status(request: web.Request) -> web.Response:
        authorised(request)
        return web.json_response(service.status())

    async def halt(request: web.Request) -> web.Response:
        authorised(request)
        body = await request.json() if request.can_read_body else {}
        reason = str(body.get("reason", "operator")) if isinstance(body, dict) else "operator"
        await service.halt(reason[:200])
        log.warning("control_halt", reason=reason[:200])
        return web.json_response(service.status())

    async def resume(request: web.Request) -> web.Response:
        token = authorised(request)
        try:
            await service.resume(token)
        except ResetRefusedError:
            raise web.HTTPForbidden(text="reset refused") from None
        log.warning("control_resume")
        return web.json_response(service.status())

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/control/status", status)
    app.router.add_post("/control/halt", halt)
    app.router.add_post("/control/resume", resume)
    return app


async def start_http(service: ExecutionService, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(service), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
