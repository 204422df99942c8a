"""Synthetic panoramic X-rays (OPGs) with tooth masks and injected duplicates, for tests, demos and CI.

Real OPG data cannot be shipped, so every stage is exercised on images that look like an STS-2D OPG
(320x640, 8-bit gray): dark background, mandible and maxilla, spine shadows at the sides, airway shadows,
upper and lower teeth along a smile-shaped occlusal curve, restorations and implants, vignetting, blur, noise
and exposure variation. Conventions (document these wherever synthetic numbers are reported):

* tooth = crown + root(s) of a natural tooth, fillings/caps/root-canal fillings included;
* implants (screw + crown) are *not* tooth (the UFBA-425 convention; Tufts labels them as tooth);
* in the normal ("fine") label, touching teeth are separated by a ~2 px gap; the "coarse" re-label of a
  duplicate is dilated, smoothed and merges neighbours, as a hurried annotator would draw it.

Duplicates are injected the way archives hold them (the curation stage must find them): exact copies,
re-exposed copies (contrast/brightness/gamma change and fresh noise), slight crop+rescale copies, and re-labelled
copies (same pixels, coarse vs fine label). `synth_truth.csv` records `image_id,labelled,group,kind`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from toothseg.data.io import write_png
from toothseg.errors import InputError
from toothseg.run.files import write_csv

KINDS = ("original", "exact", "reexposed", "relabel-coarse", "relabel-fine", "crop")
TRUTH_FILE = "synth_truth.csv"

# Per quadrant, midline outwards: central/lateral incisor, canine, 2 premolars, 3 molars.
_UPPER_W = np.array([0.95, 0.72, 0.8, 0.74, 0.72, 1.1, 1.02, 0.92])
_LOWER_W = np.array([0.62, 0.66, 0.76, 0.76, 0.76, 1.15, 1.08, 0.98])
_ROOT_LEN = np.array([1.0, 0.95, 1.3, 1.0, 1.0, 0.85, 0.82, 0.72])  # relative root length
_N_ROOTS = np.array([1, 1, 1, 1, 1, 2, 2, 2])


@dataclass
class _Tooth:
    poly: list[np.ndarray]  # outline polygons (crown+root body, extra roots), image coordinates
    pulp: np.ndarray
    crown: np.ndarray  # enamel cap polygon
    restoration: str  # "", "filling", "cap", "canal"
    implant: bool


def _tooth_outline(w: float, hc: float, hr: float, n_roots: int, rng: np.random.Generator) -> tuple:
    """Polygons in tooth-local coordinates (u across, v from the occlusal surface into the bone)."""
    v_crown = np.linspace(0, hc, 7)
    bulge = 0.88 + 0.12 * np.sin(np.pi * np.clip(v_crown / hc, 0, 1) * 0.9 + 0.3)
    half_crown = 0.5 * w * bulge
    half_crown[0] *= 0.8  # rounded occlusal corners
    v_root = np.linspace(hc, hc + hr, 8)[1:]
    t = np.clip((v_root - hc) / hr, 0, 1)
    neck = 0.5 * w * 0.78
    polys = []
    if n_roots == 1:
        half_root = neck * (1 - t) ** 0.8 + 0.07 * w * t
        right = np.c_[np.r_[half_crown, half_root], np.r_[v_crown, v_root]]
        left = right[::-1] * [-1, 1]
        apex = np.array([[0.0, hc + hr + 0.04 * hr]])
        polys.append(np.vstack([left, right[:1] * [1, 1], right, apex]))
    else:
        # body (crown + trunk) and two diverging roots
        v_trunk = hc + 0.25 * hr
        right = np.c_[np.r_[half_crown, neck], np.r_[v_crown, v_trunk]]
        polys.append(np.vstack([right[::-1] * [-1, 1], right]))
        spread = rng.uniform(0.05, 0.2) * w
        for sgn in (-1, 1):
            rt = np.linspace(0, 1, 6)
            cu = sgn * (0.22 * w + spread * rt**1.5)
            hw = 0.2 * w * (1 - rt) + 0.05 * w
            vv = hc + 0.1 * hr + rt * 0.9 * hr
            polys.append(np.vstack([np.c_[cu - hw, vv], np.c_[cu + hw, vv][::-1]]))
    vp = np.linspace(0.45 * hc, hc + 0.9 * hr, 6)
    hp = 0.12 * w * (1 - 0.7 * (vp - vp[0]) / (vp[-1] - vp[0])) + 0.02 * w
    pulp = np.vstack([np.c_[-hp, vp], np.c_[hp, vp][::-1]])
    enamel = np.vstack([np.c_[-half_crown[:5], v_crown[:5]][::-1], np.c_[half_crown[:5], v_crown[:5]]])
    return polys, pulp, enamel


def _place(local: np.ndarray, origin: np.ndarray, angle: float, up: bool) -> np.ndarray:
    """Rotate local (u, v) into the image: v grows upwards for upper teeth, downwards for lower ones."""
    u, v = local[:, 0], local[:, 1] * (-1 if up else 1)
    c, s = np.cos(angle), np.sin(angle)
    return np.c_[origin[0] + c * u - s * v, origin[1] + s * u + c * v]


def _make_teeth(h: int, w: int, rng: np.random.Generator, scene: dict) -> list[_Tooth]:
    cx, y0, curv, span, gap = scene["cx"], scene["y0"], scene["curv"], scene["span"], scene["gap"]
    size = scene["size"]
    teeth: list[_Tooth] = []
    occl = lambda x: y0 - curv * ((x - cx) / span) ** 2  # noqa: E731  the smile-shaped occlusal curve
    slope = lambda x: -2 * curv * (x - cx) / span**2  # noqa: E731
    for up, widths in ((True, _UPPER_W), (False, _LOWER_W)):
        scale = span / widths.sum()
        edges = np.r_[0, np.cumsum(widths)] * scale
        centres = (edges[:-1] + edges[1:]) / 2
        for side in (-1, 1):
            for i in range(8):
                status = scene["teeth"][(up, side, i)]
                if status == "missing":
                    continue
                x = cx + side * centres[i] + rng.normal(0, 0.06) * widths[i] * scale
                yo = occl(x) + (-gap / 2 if up else gap / 2) + rng.normal(0, 0.004 * h)
                tilt = np.arctan(slope(x)) + rng.normal(0, np.deg2rad(4)) + side * np.deg2rad(3) * (i >= 5)
                tw = widths[i] * scale * rng.uniform(1.0, 1.12)  # crowns touch or overlap slightly
                hc = size * h * rng.uniform(0.065, 0.08) * (0.9 if i < 3 else 1.0)
                hr = size * h * 0.14 * _ROOT_LEN[i] * rng.uniform(0.85, 1.15)
                implant = status == "implant"
                n_roots = 1 if implant else int(_N_ROOTS[i])
                polys, pulp, enamel = _tooth_outline(tw, hc, hr, n_roots, rng)
                if up and i >= 5:  # upper molars: roots shorter, bunched
                    polys = polys[:1] + [p * [0.8, 1] for p in polys[1:]]
                org = np.array([x, yo])
                resto = "" if implant else rng.choice(["", "filling", "cap", "canal"], p=scene["resto_p"])
                teeth.append(_Tooth([_place(p, org, tilt, up) for p in polys], _place(pulp, org, tilt, up),
                                    _place(enamel, org, tilt, up), str(resto), implant))
    return teeth


def _fill(canvas: np.ndarray, polys: list[np.ndarray], value: float = 1.0, aa: bool = True) -> None:
    for p in polys:  # one call per polygon: a multi-polygon fillPoly XORs where they overlap
        cv2.fillPoly(canvas, [np.round(p * 16).astype(np.int32)], value, lineType=cv2.LINE_AA if aa else cv2.LINE_8,
                     shift=4)


def _raster(shape: tuple[int, int], polys: list[np.ndarray]) -> np.ndarray:
    """A float32 canvas of ``shape`` with ``polys`` filled with 1 (anti-aliased edges)."""
    canvas = np.zeros(shape, np.float32)
    _fill(canvas, polys)
    return canvas


def _blurred_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    f = max(1, int(sigma // 3))  # smooth noise is drawn at low resolution and upsampled: same look, far cheaper
    small = (max(2, -(-shape[0] // f)), max(2, -(-shape[1] // f)))
    n = rng.standard_normal(small).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma / f)
    if f > 1:
        n = cv2.resize(n, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return n / (n.std() + 1e-6)


def _anatomy(h: int, w: int, rng: np.random.Generator, scene: dict) -> np.ndarray:
    """Density of everything but the teeth: skull, jaws, spine, airway, soft tissue."""
    cx, y0, span = scene["cx"], scene["y0"], scene["span"]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.full((h, w), rng.uniform(0.2, 0.3), np.float32)
    d += 0.08 * _blurred_noise((h, w), 0.06 * h, rng)  # large-scale skull overlap
    # upper skull: orbits, sinuses and zygomatic arches are mottled, brighter at the top
    d += 0.12 * np.clip(1 - yy / (0.45 * h), 0, 1) * (1 + 0.5 * _blurred_noise((h, w), 0.02 * h, rng))
    # mandible: U-shaped body between the alveolar crest and the inferior border, rami up to the condyles
    xs = np.linspace(cx - 1.45 * span, cx + 1.45 * span, 60)
    t = (xs - cx) / (1.45 * span)
    bottom = scene["jaw_low"] * h - 0.22 * h * t**4 - 0.05 * h * t**2
    top = y0 + 0.2 * h - 0.05 * h * t**2
    ramus_top = scene["condyle"] * h
    outer = np.c_[xs, bottom]
    inner = np.c_[xs, top][::-1]
    lx, rx = xs[0], xs[-1]
    ramus_w = 0.07 * w
    poly = np.vstack([[[lx + ramus_w, ramus_top]], [[lx - 0.01 * w, ramus_top + 0.05 * h]], outer,
                      [[rx + 0.01 * w, ramus_top + 0.05 * h]], [[rx - ramus_w, ramus_top]], inner[:1] + [-ramus_w * 0.6, -0.05 * h],
                      inner, inner[-1:] + [ramus_w * 0.6, -0.05 * h]])
    layer = cv2.GaussianBlur(_raster((h, w), [poly]), (0, 0), 0.012 * h)
    trab = 0.5 + 0.5 * np.clip(_blurred_noise((h, w), 1.2, rng), -2, 2) / 2
    d += layer * (scene["bone"] + 0.06 * trab)
    cortex = np.zeros((h, w), np.float32)
    cv2.polylines(cortex, [np.round(outer * 16).astype(np.int32)], False, 1.0, max(2, h // 90), cv2.LINE_AA, 4)
    d += 0.14 * cv2.GaussianBlur(cortex, (0, 0), 1.2)
    below = np.interp(xx[0], xs, bottom, left=h, right=h)[None, :]
    d -= 0.12 * np.clip((yy - below) / (0.04 * h), 0, 1)  # neck soft tissue under the mandible is darker
    # skull base, orbits and zygomatic arches: thin bright curves in the upper third
    lines = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(6, 12))):
        c = (int(rng.uniform(0.05, 0.95) * w), int(rng.uniform(0.0, 0.35) * h))
        ax = (int(rng.uniform(0.05, 0.2) * w), int(rng.uniform(0.03, 0.12) * h))
        a0 = rng.uniform(0, 360)
        cv2.ellipse(lines, c, ax, rng.uniform(-20, 20), a0, a0 + rng.uniform(60, 180), 1.0, max(1, h // 150),
                    cv2.LINE_AA)
    d += 0.1 * cv2.GaussianBlur(lines, (0, 0), 0.8)
    # maxilla and hard palate: a bright band above the upper roots
    pal = np.zeros((h, w), np.float32)
    xp = np.linspace(cx - 1.1 * span, cx + 1.1 * span, 30)
    yp = y0 - 0.27 * h - 0.04 * h * ((xp - cx) / span) ** 2
    cv2.polylines(pal, [np.round(np.c_[xp, yp] * 16).astype(np.int32)], False, 1.0, max(3, h // 50), cv2.LINE_AA, 4)
    d += 0.12 * cv2.GaussianBlur(pal, (0, 0), 2.0)
    maxilla = ((yy > yp.min()) & (yy < y0) & (np.abs(xx - cx) < 1.1 * span)).astype(np.float32)
    d += 0.08 * cv2.GaussianBlur(maxilla, (0, 0), 0.03 * h)
    # airway: dark palatoglossal band above the upper teeth and pharyngeal bands over the rami
    air = np.zeros((h, w), np.float32)
    cv2.polylines(air, [np.round(np.c_[xp, yp + 0.05 * h] * 16).astype(np.int32)], False, 1.0, max(3, h // 40),
                  cv2.LINE_AA, 4)
    for side in (-1, 1):
        x = cx + side * span * rng.uniform(1.15, 1.3)
        cv2.line(air, (int(x * 16), int(0.25 * h * 16)), (int((x + side * 0.02 * w) * 16), int(0.95 * h * 16)), 1.0,
                 max(4, h // 25), cv2.LINE_AA, 4)
    d -= scene["air"] * cv2.GaussianBlur(air, (0, 0), 0.015 * h)
    # tongue: a soft bright blob behind the anterior teeth
    tongue = np.zeros((h, w), np.float32)
    cv2.ellipse(tongue, (int(cx), int(y0 - 0.04 * h)), (int(0.7 * span), int(0.07 * h)), 0, 0, 360, 1.0, -1)
    d += 0.05 * cv2.GaussianBlur(tongue, (0, 0), 0.03 * h)
    # cervical spine: stacked vertebrae at both sides, plus its blurred ghost over the midline
    spine = np.zeros((h, w), np.float32)
    vh = 0.085 * h
    for side in (0, 1):
        xc = (rng.uniform(0.02, 0.06) if side == 0 else rng.uniform(0.94, 0.98)) * w
        y = rng.uniform(0.3, 0.4) * h
        while y < h:
            cv2.rectangle(spine, (int(xc - 0.035 * w), int(y)), (int(xc + 0.035 * w), int(y + vh * 0.8)), 1.0, -1)
            y += vh
    spine *= 1 + 0.3 * _blurred_noise((h, w), 3.0, rng)
    d += 0.14 * cv2.GaussianBlur(spine, (0, 0), 3.0)
    d += scene["ghost"] * np.exp(-(((xx - cx) / (0.06 * w)) ** 2)) * np.clip((yy - 0.35 * h) / (0.5 * h), 0, 1)
    return d


def _render_clean(h: int, w: int, rng: np.random.Generator, scene: dict) -> tuple[np.ndarray, np.ndarray]:
    """Density image (before exposure/noise) and the per-tooth label map (0 = background, i = tooth i)."""
    density = _anatomy(h, w, rng, scene)
    teeth = _make_teeth(h, w, rng, scene)
    labels = np.zeros((h, w), np.int32)
    tooth_d = np.zeros((h, w), np.float32)
    metal = np.zeros((h, w), np.float32)
    for i, t in enumerate(teeth, start=1):
        crown = _raster((h, w), [t.crown])
        if t.implant:
            # screw: a tapered threaded post; crown: a metal-ceramic cap. Not tooth in the label.
            post = cv2.erode(_raster((h, w), [t.poly[0]]), np.ones((5, 5), np.uint8))
            threads = ((np.arange(h)[:, None] + np.arange(w)[None, :] * 0.2) % 5 < 2).astype(np.float32)
            metal += post * (1 - 0.35 * threads)
            metal += crown
            continue
        _fill(labels, t.poly, i, aa=False)
        body = np.minimum(_raster((h, w), t.poly), 1.0)
        tooth_d += scene["dentin"] * body
        tooth_d += scene["enamel"] * crown
        tooth_d -= 0.45 * scene["dentin"] * _raster((h, w), [t.pulp]) * body  # the pulp canal: a gap inside the tooth
        if t.restoration == "cap":
            metal += crown
        elif t.restoration == "filling":
            c = t.crown.mean(axis=0)
            filling = np.zeros((h, w), np.float32)
            ax = (abs(t.crown[:, 0].max() - t.crown[:, 0].min()) * 0.3, abs(t.crown[:, 1].max() - t.crown[:, 1].min()) * 0.3)
            cv2.ellipse(filling, (int(c[0]), int(c[1])), (max(1, int(ax[0])), max(1, int(ax[1]))), 0, 0, 360, 1.0, -1)
            metal += filling
        elif t.restoration == "canal":
            metal += 0.7 * cv2.erode(_raster((h, w), [t.pulp]), np.ones((2, 2), np.uint8))
    density += cv2.GaussianBlur(tooth_d, (0, 0), 0.6)
    density += 1.4 * cv2.GaussianBlur(np.clip(metal, 0, 1), (0, 0), 0.5)
    if scene["marker"]:
        mark = np.zeros((h, w), np.uint8)  # the side marker printed on most OPGs
        cv2.putText(mark, "L", (int(0.94 * w), int(0.95 * h)), cv2.FONT_HERSHEY_SIMPLEX, h / 400, 255,
                    max(1, h // 200), cv2.LINE_AA)
        density += mark.astype(np.float32) * (1.2 / 255)
    return density, labels


def _expose(density: np.ndarray, exposure: dict, rng: np.random.Generator) -> np.ndarray:
    """Density -> uint8 film: attenuation, vignetting, contrast/brightness/gamma, blur and noise."""
    h, w = density.shape
    img = 1.0 - np.exp(-exposure["k"] * density)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img *= 1.0 - exposure["vignette"] * r2
    img = np.clip(exposure["contrast"] * (img - 0.5) + 0.5 + exposure["brightness"], 0, 1) ** exposure["gamma"]
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), exposure["blur"])
    img += exposure["noise"] * rng.standard_normal((h, w)).astype(np.float32)
    img += 0.5 * exposure["noise"] * _blurred_noise((h, w), 1.0, rng)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def _random_exposure(rng: np.random.Generator) -> dict:
    return {"k": rng.uniform(1.7, 2.3), "vignette": rng.uniform(0.1, 0.3), "contrast": rng.uniform(1.0, 1.35),
            "brightness": rng.uniform(-0.08, 0.06), "gamma": rng.uniform(0.8, 1.3), "blur": rng.uniform(0.5, 1.2),
            "noise": rng.uniform(0.012, 0.03)}


def _random_scene(h: int, w: int, rng: np.random.Generator, need_teeth: bool = False) -> dict:
    dentition = rng.choice(["full", "partial", "sparse", "none"], p=[0.5, 0.3, 0.12, 0.08])
    if need_teeth and dentition in ("none", "sparse"):
        dentition = "full"
    p_present = {"full": 0.97, "partial": 0.75, "sparse": 0.3, "none": 0.0}[dentition]
    teeth = {}
    for up in (True, False):
        for side in (-1, 1):
            for i in range(8):
                p = p_present * (0.55 if i == 7 else 1.0)  # third molars are often missing
                if rng.random() < p:
                    teeth[(up, side, i)] = "tooth"
                elif dentition in ("partial", "sparse") and 2 < i < 7 and rng.random() < 0.15:
                    teeth[(up, side, i)] = "implant"
                else:
                    teeth[(up, side, i)] = "missing"
    return {"cx": w / 2 + rng.normal(0, 0.015 * w), "y0": h * rng.uniform(0.48, 0.56), "curv": h * rng.uniform(0.03, 0.09),
            "span": w * rng.uniform(0.25, 0.3), "gap": h * rng.uniform(0.0, 0.03), "size": rng.uniform(0.9, 1.1),
            "jaw_low": rng.uniform(0.86, 0.95), "condyle": rng.uniform(0.22, 0.32), "bone": rng.uniform(0.16, 0.26), "dentin": rng.uniform(0.26, 0.34), "enamel": rng.uniform(0.16, 0.24),
            "air": rng.uniform(0.06, 0.14), "ghost": rng.uniform(0.0, 0.08), "marker": bool(rng.random() < 0.6),
            "teeth": teeth, "resto_p": [0.86, 0.06, 0.04, 0.04]}


def fine_mask(labels: np.ndarray) -> np.ndarray:
    """Binary tooth mask with a thin gap wherever two different teeth touch (the careful annotator's label)."""
    k = np.ones((3, 3), np.uint8)
    big = np.int32(labels.max() + 1)
    lab = labels.astype(np.float32)  # cv2 morphology needs float32 for values > 255
    maxf = cv2.dilate(lab, k)
    minf = cv2.erode(np.where(labels > 0, labels, big).astype(np.float32), k)
    touching = (maxf > lab) | (minf < lab)
    return (labels > 0) & ~touching


def coarse_mask(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hurried label of the same teeth: outlines dilated and smoothed, neighbouring teeth merged."""
    h = labels.shape[0]
    m = (labels > 0).astype(np.uint8)
    r = max(2, int(round(h / 320 * rng.uniform(2.5, 4.5))))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (r + 1, r + 1)))
    return cv2.GaussianBlur(m.astype(np.float32), (0, 0), r / 1.5) > 0.5


@dataclass
class _Item:
    group: int
    kind: str
    labelled: bool
    scene: int  # index of the underlying X-ray


def _plan(labelled: int, unlabelled: int, duplicates: bool, rng: np.random.Generator) -> list[_Item]:
    """Decide every output image: which X-ray it shows, how it was copied, labelled or not (exact counts)."""
    total = labelled + unlabelled
    left = {True: labelled, False: unlabelled}
    items: list[_Item] = []
    group = 0
    if duplicates and total >= 4:
        target = max(2, int(round(total * rng.uniform(0.17, 0.23))))
        members = 0
        while members < target - 1:
            kind = rng.choice(["exact", "reexposed", "crop", "relabel"], p=[0.25, 0.3, 0.2, 0.25])
            if kind == "relabel":
                if left[True] < 2:  # a re-label needs two labelled slots
                    kind = rng.choice(["exact", "reexposed", "crop"])
                else:
                    items += [_Item(group, "relabel-fine", True, group), _Item(group, "relabel-coarse", True, group)]
                    left[True] -= 2
                    members += 2
                    group += 1
                    continue
            if left[True] + left[False] < 2:
                break
            n_copies = 2 if (rng.random() < 0.15 and target - members >= 3) else 1
            flags = []
            for _ in range(n_copies + 1):
                want = bool(rng.random() < left[True] / max(1, left[True] + left[False]))
                flag = want if left[want] > 0 else not want
                if left[flag] == 0:
                    break
                left[flag] -= 1
                flags.append(flag)
            if len(flags) < 2:
                for f in flags:
                    left[f] += 1
                break
            items.append(_Item(group, "original", flags[0], group))
            items += [_Item(group, str(kind), f, group) for f in flags[1:]]
            members += len(flags)
            group += 1
    for flag in (True, False):
        for _ in range(left[flag]):
            items.append(_Item(group, "original", flag, group))
            group += 1
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def _crop_rescale(arr: np.ndarray, box: tuple[int, int, int, int], nearest: bool) -> np.ndarray:
    t, b, l, r = box
    h, w = arr.shape
    return cv2.resize(arr[t:h - b, l:w - r], (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder", "choose a new output folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(out, "output folder is not empty", "choose a new folder or pass --overwrite")
        # remove only what synth writes, so nothing else the user keeps there is touched
        for sub in ("images", "masks", "unlabelled"):
            for p in (out / sub).glob("*.png") if (out / sub).is_dir() else []:
                p.unlink()
        (out / TRUTH_FILE).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def synth(out: str | Path, labelled: int = 40, unlabelled: int = 20, height: int = 320, width: int = 640,
          seed: int = 0, duplicates: bool = True, overwrite: bool = False) -> dict:
    """Write a synthetic OPG dataset in layout (a) plus `synth_truth.csv`; returns a summary dict.

    OUT/images/<id>.png (uint8 gray), OUT/masks/<id>.png (0/255), OUT/unlabelled/<id>.png,
    OUT/synth_truth.csv: image_id,labelled (1/0),group (shared by all copies of one X-ray),kind.
    """
    if labelled < 0 or unlabelled < 0 or labelled + unlabelled == 0:
        raise InputError("--labelled/--unlabelled", f"need at least one image (got {labelled}+{unlabelled})",
                         "pass positive counts")
    if height < 64 or width < 64:
        raise InputError("--size", f"{height}x{width} is too small for an OPG", "use at least 64x64, e.g. 320x640")
    out = Path(out)
    _prepare_out(out, overwrite)
    t0 = time.perf_counter()
    plan_rng = np.random.default_rng([seed, 0])
    items = _plan(labelled, unlabelled, duplicates, plan_rng)
    n_groups = max(it.group for it in items) + 1
    relabel_groups = {it.group for it in items if it.kind.startswith("relabel")}
    width_id = max(4, len(str(len(items))))
    cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # group -> density, labels, first pixels
    rows = []
    for idx, it in enumerate(items):
        rng = np.random.default_rng([seed, 1, it.scene])  # the X-ray itself: same for every copy
        copy_rng = np.random.default_rng([seed, 2, idx])  # how this copy differs
        if it.group not in cache:
            scene = _random_scene(height, width, rng, need_teeth=it.group in relabel_groups)
            density, labels = _render_clean(height, width, rng, scene)
            pixels = _expose(density, _random_exposure(rng), rng)
            cache[it.group] = (density, labels, pixels)
        density, labels, pixels = cache[it.group]
        mask = fine_mask(labels)
        img = pixels
        if it.kind == "reexposed":
            exp = _random_exposure(copy_rng)
            img = _expose(density, exp, copy_rng)
        elif it.kind == "crop":
            box = tuple(int(v) for v in copy_rng.integers(1, max(2, int(0.06 * min(height, width))), 4))
            img = _crop_rescale(pixels, box, nearest=False)
            mask = _crop_rescale(mask.astype(np.uint8), box, nearest=True) > 0
        elif it.kind == "relabel-coarse":
            mask = coarse_mask(labels, copy_rng)
        image_id = f"synth{idx:0{width_id}d}"
        folder = "images" if it.labelled else "unlabelled"
        write_png(out / folder / f"{image_id}.png", img)
        if it.labelled:
            write_png(out / "masks" / f"{image_id}.png", mask)
        rows.append((image_id, int(it.labelled), it.group, it.kind))
        if len(cache) > 64:  # groups are interleaved; keep memory bounded on big runs
            cache.pop(next(iter(cache)))
    write_csv(out / TRUTH_FILE, ["image_id", "labelled", "group", "kind"], rows)
    sizes = Counter(it.group for it in items)
    in_dups = sum(n for n in sizes.values() if n > 1)
    return {"out": str(out), "labelled": labelled, "unlabelled": unlabelled, "groups": n_groups,
            "duplicate_groups": sum(1 for n in sizes.values() if n > 1), "images_in_duplicate_groups": in_dups,
            "seconds": round(time.perf_counter() - t0, 2)}
