"""A Starlette app served by uvicorn in a background thread, with an access token off loopback.

The live view (and, next, the labeler) build their routes and hand them here. A server
listening on anything but loopback refuses every request (HTTP 403, WebSocket close 1008)
that does not carry the token, as ``?token=`` or ``Authorization: Bearer``; the token is
generated when none is configured and printed at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from importlib.resources import files
from typing import Any

from poseloop.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def needs_token(host: str) -> bool:
    """Whether a server on ``host`` is reachable from other machines (then: a token)."""
    return host not in LOOPBACK


def authorized(token: str | None, query: Any, headers: Any) -> bool:
    """Whether a request carries the token (always, when none is required)."""
    if token is None:
        return True
    given = query.get("token") or ""
    bearer = headers.get("authorization") or ""
    if bearer.startswith("Bearer "):
        given = given or bearer[7:]
    return secrets.compare_digest(given.encode(), token.encode())


def _quiet_server() -> type:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its signal handlers: the engine owns SIGINT and SIGTERM."""

        def install_signal_handlers(self) -> None:
            return None

    return QuietServer


def page_routes(server: Callable[[], WebServer | None], page: str, script: str) -> list[Any]:
    """Routes of a page: ``/`` serves ``static/<page>``, ``/static/`` its script and the
    shared style sheet; every request checked against ``server()``'s token."""
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    static = files("poseloop.web") / "static"

    def refused(request: Any) -> Response | None:
        web = server()
        return web.denied(request) if web is not None else Response("starting", 503)

    async def index(request: Any) -> Response:
        return refused(request) or FileResponse(str(static / page))

    async def asset(request: Any) -> Response:
        name = request.path_params["name"]
        if name not in (script, "style.css"):
            return Response("not found", status_code=404)
        return refused(request) or FileResponse(str(static / name))

    return [Route("/", index), Route("/static/{name}", asset)]


class WebServer:
    """Serves ``routes`` on host:port from a daemon thread until :meth:`stop`.

    ``loop`` is the server's asyncio loop once started (for ``call_soon_threadsafe``).
    ``port`` 0 takes a free port; :attr:`port` is the real one after :meth:`start`.
    """

    def __init__(self, routes: Sequence[Any], host: str, port: int,
                 token: str | None = None, log: Callable[[str], None] = print,
                 name: str = "live view") -> None:
        from starlette.applications import Starlette

        self.host, self.port = host, port
        self.token = token or (secrets.token_urlsafe(16) if needs_token(host) else None)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._log = log
        self.name = name

        @contextlib.asynccontextmanager
        async def lifespan(_app: Any) -> AsyncIterator[None]:
            self.loop = asyncio.get_running_loop()
            yield

        self.app = Starlette(routes=list(routes), lifespan=lifespan)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def denied(self, request: Any) -> Any:
        """A 403 response for a request without the token, else None."""
        from starlette.responses import Response

        if authorized(self.token, request.query_params, request.headers):
            return None
        return Response("access token missing or wrong", status_code=403)

    @property
    def url(self) -> str:
        """The address to open in a browser (with the token when one is needed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port}/{query}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start listening; ConfigError naming host:port when it cannot."""
        import uvicorn

        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                lifespan="on", access_log=False, ws="websockets-sansio")
        self._server = server = _quiet_server()(config)
        self._thread = threading.Thread(target=server.run, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"web: cannot listen on {self.host}:{self.port} (in use, or "
                                  "not an address of this machine?)")
            time.sleep(0.01)
        sockets = [s for srv in server.servers for s in srv.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._log(f"{self.name}: {self.url}")

    def stop(self) -> None:
        """Stop serving (open WebSockets are closed) and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
