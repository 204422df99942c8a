"""The review web app (Starlette): a JSON/PNG API over a `Session` and the static page that uses it.

    GET  /                          the page
    GET  /api/items                 items with scores, reasons and decisions
    GET  /api/items/{id}/image      the X-ray (PNG, full resolution)
    GET  /api/items/{id}/mask       the mask to start from (accepted, else predicted; 0/255 PNG)
    GET  /api/items/{id}/prediction the predicted mask (0/255 PNG)
    GET  /api/items/{id}/overlay    the X-ray with the predicted mask drawn in (PNG)
    POST /api/items/{id}/accept     body: the corrected mask as PNG -> written into the reviewed dataset
    POST /api/items/{id}/reject | /skip
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from toothseg.data.io import encode_png
from toothseg.errors import ToothsegError
from toothseg.review.session import BadUpload, Session

STATIC = Path(__file__).with_name("static")
PICTURES = ("image", "mask", "prediction", "overlay")
ACTIONS = ("accept", "reject", "skip")
MAX_UPLOAD = 64 * 1024 * 1024  # a 0/255 PNG of even a 4k x 8k X-ray compresses far below this


def _error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


def _png(arr: np.ndarray) -> Response:
    try:
        data = encode_png(arr, compression=1)  # fast: pictures are made per request
    except ValueError as exc:
        return _error(500, str(exc))
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


def create_app(session: Session) -> Starlette:
    """The ASGI app for one review session."""
    from toothseg.predict.outputs import overlay

    def render(item_id: str, what: str) -> Response:
        try:
            img = session.image(item_id)
        except KeyError:
            return _error(404, f"unknown item '{item_id}'")
        except ToothsegError as exc:
            return _error(422, str(exc))
        if what == "image":
            return _png(img)
        if what == "prediction":
            return _png(session.prediction(item_id, img.shape))
        if what == "mask":
            return _png(session.current_mask(item_id, img.shape))
        return _png(overlay(img, session.prediction(item_id, img.shape)))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def items(request: Request) -> Response:
        return JSONResponse({"items": session.listing(), "user": session.user, "out": str(session.out),
                             "source": session.meta})

    async def picture(request: Request) -> Response:
        if request.path_params["what"] not in PICTURES:
            return _error(404, f"no such picture '{request.path_params['what']}'")
        return await run_in_threadpool(render, request.path_params["item_id"], request.path_params["what"])

    async def decide(request: Request) -> Response:
        item_id, action = request.path_params["item_id"], request.path_params["action"]
        if action not in ACTIONS:
            return _error(404, f"no such action '{action}'")
        if item_id not in session.items:
            return _error(404, f"unknown item '{item_id}'")
        try:
            if action == "accept":
                size = int(request.headers.get("content-length") or 0)
                if size > MAX_UPLOAD:
                    return _error(413, f"upload of {size} bytes is over the {MAX_UPLOAD} byte limit")
                body = await request.body()
                if len(body) > MAX_UPLOAD:
                    return _error(413, f"upload of {len(body)} bytes is over the {MAX_UPLOAD} byte limit")
                rec = await run_in_threadpool(session.accept, item_id, body)
            else:
                decision = {"reject": "rejected", "skip": "skipped"}[action]
                rec = await run_in_threadpool(session.decide, item_id, decision)
        except BadUpload as exc:
            return _error(400, f"{item_id}: {exc}")
        except ToothsegError as exc:
            return _error(422, str(exc))
        return JSONResponse(rec)

    routes = [
        Route("/", index),
        Route("/api/items", items),
        Route("/api/items/{item_id}/{what:str}", picture, methods=["GET"]),
        Route("/api/items/{item_id}/{action:str}", decide, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
