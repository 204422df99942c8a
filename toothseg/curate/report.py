"""curation.html: one self-contained page a reviewer can check by eye.

Counts, the distance histogram with the threshold, and a contact sheet per duplicate group (images side by side,
labels outlined, pairwise label Dice, which copy was kept). Images are embedded, so the page travels alone; it holds
the user's images, so it stays in the run folder.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from toothseg.data.io import read_image, read_mask

if TYPE_CHECKING:
    from toothseg.curate.conflicts import GroupDecision, Loaded
    from toothseg.curate.hashing import Distances

TILE_H = 180
_USE_COLOUR = {"train": "#1a7f37", "drop": "#b42318"}


def _b64(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _tile(item: Loaded) -> str:
    """The image at TILE_H px high with its label outlined in red (JPEG, embedded)."""
    img = read_image(item.sample.image_path)
    h, w = img.shape
    size = (max(1, round(w * TILE_H / h)), TILE_H)
    rgb = cv2.cvtColor(cv2.resize(img, size, interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
    if item.sample.mask_path is not None:
        m = cv2.resize(read_mask(item.sample.mask_path).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, (0, 0, 255), 1)
    ok, buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return _b64(buf.tobytes(), "image/jpeg")


def histogram_png(dist: Distances, threshold: int) -> bytes:
    """Two panels: all pairwise distances, and each image's nearest-neighbour distance; threshold drawn on both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(dist.final)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    if n >= 2:
        pairs = dist.final[np.triu_indices(n, 1)]
        nn = np.where(np.eye(n, dtype=bool), np.iinfo(np.int16).max, dist.final).min(axis=1)
        top = int(max(pairs.max(), threshold)) + 2
        for ax, vals, title in ((axes[0], pairs, f"all pairs (n={len(pairs)})"),
                                (axes[1], nn, f"nearest other image (n={n})")):
            ax.hist(vals, bins=np.arange(0, top + 2, 2), color="#4a6fa5", log=True)
            ax.axvline(threshold + 0.5, color="#b42318", ls="--", label=f"threshold {threshold}")
            ax.set_xlabel("pHash distance (bits; registered where lower)")
            ax.set_title(title)
            ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _group_html(gid: int, g: list[int], loaded: list[Loaded], d: GroupDecision, items: dict[str, dict]) -> str:
    cells = []
    for i in g:
        s = loaded[i].sample
        it = items[s.key]
        colour = _USE_COLOUR.get(it["use"], "#9a6700")
        fine = f"<br>fineness {d.fineness[s.key]:.4f}, {d.components[s.key]} regions" if s.key in d.fineness else ""
        cells.append(
            f'<figure><img src="{_tile(loaded[i])}" alt="{html.escape(s.key)}">'
            f"<figcaption><b>{html.escape(s.key)}</b> ({'labelled' if s.labelled else 'unlabelled'}){fine}"
            f'<br><span style="color:{colour}"><b>{html.escape(it["use"])}</b></span>: {html.escape(it["reason"])}'
            "</figcaption></figure>"
        )
    dice = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{v:.3f}</td></tr>"
                   for (a, b), v in d.dice.items())
    table = f"<table><tr><th>label a</th><th>label b</th><th>Dice</th></tr>{dice}</table>" if dice else ""
    flag = ' <span class="conflict">label conflict</span>' if d.conflict else ""
    return f'<section id="g{gid}"><h3>group {gid}{flag}</h3><div class="row">{"".join(cells)}</div>{table}</section>'


def write_report(path: Path, summary: dict[str, Any], loaded: list[Loaded], groups: list[list[int]],
                 decisions: list[GroupDecision], items: dict[str, dict], dist: Distances, threshold: int) -> None:
    """Write the self-contained HTML report."""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary.items() if not isinstance(v, dict))
    pol = "".join(f"<tr><td>{p}</td><td>{c['train']}</td><td>{c['drop']}</td><td>{c['label_from']}</td></tr>"
                  for p, c in summary.get("group_members_by_policy", {}).items())
    dropped = [(k, v) for k, v in items.items() if v["use"] == "drop" and v["group"] is None]
    bad = "".join(f"<li>{html.escape(k)}: {html.escape(v['reason'])}</li>" for k, v in dropped)
    hist = _b64(histogram_png(dist, threshold), "image/png")
    sheets = "".join(_group_html(gid, g, loaded, d, items) for gid, (g, d) in enumerate(zip(groups, decisions)))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>toothseg curation</title><style>
body{{font-family:sans-serif;margin:1.5em;max-width:1500px}} table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px}} .row{{display:flex;flex-wrap:wrap;gap:10px}}
figure{{margin:0;max-width:420px;font-size:12px}} .conflict{{color:#b42318;font-size:14px}}
section{{border-top:1px solid #ddd;padding-top:.4em}}</style></head><body>
<h1>Curation report</h1>
<table>{rows}</table>
<h2>Group members by policy</h2><p>What each policy does with the {summary.get('images_in_groups', 0)} images in
groups (singletons are always kept).</p>
<table><tr><th>policy</th><th>train</th><th>drop</th><th>label-from</th></tr>{pol}</table>
{f'<h2>Excluded</h2><ul>{bad}</ul>' if bad else ''}
<h2>Distance distribution</h2><img src="{hist}" alt="distance histogram">
<h2>Duplicate groups ({len(groups)})</h2>{sheets or '<p>none found</p>'}
</body></html>"""
    path.write_text(page)
