"""``poseloop label PROJECT``: label frames in a browser, saved in DeepLabCut's layout.

Serves the project's ``labeled-data`` folders: the page (``static/label.html``) shows one
frame at a time; a click places the current bodypart (of the current animal), dragging a
point moves it, Delete (or a right click on it) marks it not visible; keys step through
parts, animals and frames; the wheel zooms and dragging the background pans. Every change
is one request that :class:`~poseloop.labeling.label_store.LabelStore` saves at once, so
closing the tab or killing the server loses at most the change in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from poseloop.errors import ProjectError
from poseloop.labeling.label_store import LabelStore, folders
from poseloop.web.server import WebServer, page_routes


def labeler_server(project: str | Path, host: str = "127.0.0.1", port: int = 8000,
                   token: str | None = None, scorer: str | None = None,
                   log: Callable[[str], None] = print) -> WebServer:
    """A started server of the labeler for ``project`` (stop it with ``.stop()``)."""
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    root = Path(project).expanduser().resolve()
    names = folders(root)
    if not names:
        raise ProjectError(f"{root}: no labeled-data/<video>/ folder with images; run "
                           "poseloop extract-frames first")
    stores: dict[str, LabelStore] = {}
    server: WebServer | None = None

    def store(name: str) -> LabelStore:
        if name not in names:
            raise ProjectError(f"no labeled-data folder {name!r}")
        if name not in stores:
            stores[name] = LabelStore(root, name, scorer)
        return stores[name]

    def denied(request: Any) -> Response | None:
        assert server is not None
        return server.denied(request)

    async def project_info(request: Any) -> Response:
        return denied(request) or JSONResponse({"project": root.name, "folders": names})

    async def folder(request: Any) -> Response:
        if (no := denied(request)) is not None:
            return no
        try:
            return JSONResponse(store(request.path_params["folder"]).as_json())
        except ProjectError as e:
            return JSONResponse({"error": str(e)}, status_code=404)

    async def image(request: Any) -> Response:
        if (no := denied(request)) is not None:
            return no
        try:
            s = store(request.path_params["folder"])
        except ProjectError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        name = request.path_params["image"]
        if name not in s.images:
            return JSONResponse({"error": f"no image {name}"}, status_code=404)
        return FileResponse(str(s.folder / name))

    async def label(request: Any) -> Response:
        if (no := denied(request)) is not None:
            return no
        body = await request.json()
        try:
            s = store(str(body["folder"]))
            x, y = body.get("x"), body.get("y")
            xy = None if x is None or y is None else (float(x), float(y))
            s.set(str(body["image"]), str(body.get("individual") or ""), str(body["bodypart"]),
                  xy)
        except (KeyError, TypeError, ValueError, ProjectError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse({"ok": True})

    server = WebServer([
        *page_routes(lambda: server, "label.html", "label.js"),
        Route("/api/project", project_info),
        Route("/api/folder/{folder}", folder), Route("/api/image/{folder}/{image}", image),
        Route("/api/label", label, methods=["POST"]),
    ], host, port, token, log, name="labeler")
    server.start()
    return server
