"""A review session: items, their decisions, and the reviewed dataset folder it writes.

Accepted masks go to a NEW dataset folder in the toothseg layout (``images/`` + ``masks/``), never over the user's
originals; ``review.csv`` records every decision (who, when, from which prediction and bundle) and ``review.json``
the latest one per image, so a restarted session continues where it stopped. A mask replaced by a later decision is
kept under ``history/``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import getpass
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np

from toothseg.atomic import atomic_path
from toothseg.data.io import read_image, read_mask, write_png
from toothseg.errors import InputError, ToothsegError
from toothseg.review.items import Item
from toothseg.run.folder import read_json, write_json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOG_FIELDS = ["time", "user", "id", "key", "decision", "image", "prediction", "bundle", "changed_px", "mask"]


class BadUpload(ValueError):
    """An uploaded mask the server refuses (message says why and what to send)."""


def decode_mask(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """A PNG upload as a bool mask at ``shape`` (the image's own size).

    The page sends the mask at the image's size; a smaller mask with the same aspect ratio (edited at display
    size) is scaled up with nearest neighbour, so no new label values appear. Anything else is refused.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise BadUpload("not a PNG; send the mask as a PNG image")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise BadUpload("unreadable PNG")
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    h, w = arr.shape[:2]
    H, W = shape
    if (h, w) != (H, W):
        same_aspect = abs(h * W - w * H) <= max(H, W)  # within one pixel of rounding
        if not (h <= H and w <= W and same_aspect and min(h, w) >= 8):
            raise BadUpload(f"mask is {w}x{h} but the image is {W}x{H}; send it at the image's size")
        arr = cv2.resize(arr, (W, H), interpolation=cv2.INTER_NEAREST)
    return arr > (0 if arr.max(initial=0) <= 1 else 127)


class Session:
    """Thread-safe state of one review: the server calls it from worker threads."""

    def __init__(self, items: list[Item], out: str | Path, meta: dict | None = None, user: str | None = None) -> None:
        if not items:
            raise ToothsegError("nothing to review: the list is empty")
        self.items = {it.id: it for it in items}  # in worklist order
        self.out = Path(out).expanduser()
        self.meta = dict(meta or {})
        self.user = user or getpass.getuser()
        self._lock = threading.Lock()
        for it in items:
            for p in (it.image_path, it.prediction):
                if p is not None and (p.resolve().is_relative_to(self.out.resolve())
                                      or self.out.resolve().is_relative_to(p.parent.resolve())):
                    raise InputError(self.out, f"the reviewed dataset folder overlaps the inputs ({p})",
                                     "pass a new --out folder outside the images and predictions")
        marker = self.out / "review.json"
        if self.out.exists() and any(self.out.iterdir()) and not marker.is_file():
            raise InputError(self.out, "folder exists, is not empty and is not a review folder",
                             "pass a new --out folder (review never writes into other folders)")
        self.state: dict[str, dict] = {}
        if marker.is_file():
            try:
                self.state = dict(read_json(marker).get("items", {}))
            except (ValueError, AttributeError):
                raise InputError(marker, "unreadable review record", "fix or move it, then restart") from None
        self.out.mkdir(parents=True, exist_ok=True)
        self._save_state()

    def listing(self) -> list[dict]:
        return [{"id": i, "key": it.key, "name": it.name, "scores": it.scores, "reason": it.reason,
                 "status": self.state.get(i, {}).get("decision", "todo")} for i, it in self.items.items()]

    def image(self, item_id: str) -> np.ndarray:
        return read_image(self.items[item_id].image_path)

    def prediction(self, item_id: str, shape: tuple[int, int]) -> np.ndarray:
        """The predicted mask at the image's size (empty when there is none)."""
        p = self.items[item_id].prediction
        if p is None or not p.is_file():
            return np.zeros(shape, bool)
        m = read_mask(p)
        if m.shape != shape:
            m = cv2.resize(m.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        return m

    def current_mask(self, item_id: str, shape: tuple[int, int]) -> np.ndarray:
        """The accepted mask if there is one, else the prediction: what the page starts editing from."""
        accepted = self.out / "masks" / f"{self.items[item_id].name}.png"
        if self.state.get(item_id, {}).get("decision") == "accepted" and accepted.is_file():
            return read_mask(accepted)
        return self.prediction(item_id, shape)

    def accept(self, item_id: str, png: bytes) -> dict:
        it = self.items[item_id]
        img = self.image(item_id)
        mask = decode_mask(png, img.shape)
        changed = int((mask != self.prediction(item_id, img.shape)).sum())
        with self._lock:
            self._retire(it)
            with atomic_path(self.out / "images" / f"{it.name}{it.image_path.suffix.lower()}") as tmp:
                shutil.copyfile(it.image_path, tmp)
            mask_out = self.out / "masks" / f"{it.name}.png"
            write_png(mask_out, mask)  # atomic
            return self._record(it, "accepted", changed, mask_out)

    def decide(self, item_id: str, decision: str) -> dict:
        """Reject or skip; a rejected image leaves the reviewed dataset (its earlier mask goes to history/)."""
        if decision not in ("rejected", "skipped"):
            raise ValueError(decision)
        it = self.items[item_id]
        with self._lock:
            if decision == "rejected":
                self._retire(it)
            elif self.state.get(item_id, {}).get("decision") == "accepted":
                return self.state[item_id]  # skipping past an accepted image keeps it
            return self._record(it, decision, None, None)

    def _retire(self, it: Item) -> None:
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
        for p in [self.out / "masks" / f"{it.name}.png", *sorted((self.out / "images").glob(f"{it.name}.*"))]:
            if p.is_file() and p.stem == it.name:
                dest = self.out / "history" / f"{it.name}-{stamp}-{p.parent.name}{p.suffix}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                p.replace(dest)

    def _record(self, it: Item, decision: str, changed: int | None, mask: Path | None) -> dict:
        rec = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "user": self.user,
               "id": it.id, "key": it.key, "decision": decision, "image": str(it.image_path),
               "prediction": str(it.prediction) if it.prediction else "", "bundle": self.meta.get("bundle") or "",
               "changed_px": "" if changed is None else changed, "mask": str(mask) if mask else ""}
        log = self.out / "review.csv"
        new = not log.is_file()
        with log.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new:
                w.writeheader()
            w.writerow(rec)
        self.state[it.id] = rec
        self._save_state()
        return rec

    def _save_state(self) -> None:
        write_json(self.out / "review.json", {"format": "toothseg-review", "source": self.meta,
                                              "items": self.state})
