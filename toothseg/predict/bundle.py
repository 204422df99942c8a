"""The model bundle: everything inference needs, in one folder (optionally zipped), free of Lightning.

    bundle/
      bundle.json          members (tag, fold, ModelConfig, scale, resize, weight, checkpoint[, onnx]), fusion
                           weights, OOF-tuned threshold and post-processing, TTA, config, data summary, versions
      models/<tag>__fold<k>.pt   plain state dicts of the networks (no "model." prefix)
      onnx/<tag>__fold<k>.onnx   after `toothseg export` (sigmoid included: outputs probabilities)

Fusion weights: one weight per tag, shared equally by its folds. With one tag it is 1; with 2-3 tags the weights are
searched on a 0.1 simplex grid maximising mean OOF Dice of the fused OOF maps (OOF maps of each tag come from that
tag's fold models, so fusing them at original size is an honest estimate); with more tags they are proportional to
CV Dice. The threshold and post-processing are then tuned on the fused OOF maps (see `toothseg.predict.threshold`).
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import logging
import math
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

import toothseg
from toothseg.errors import InputError, ToothsegError
from toothseg.run.folder import RunDir, open_run, read_json, write_json

log = logging.getLogger("toothseg")

BUNDLE_FORMAT = "toothseg-bundle"
BUNDLE_VERSION = 1
_FOLD_DIR = re.compile(r"^fold(\w+)$")


@dataclass(frozen=True)
class Member:
    """One network of the ensemble: a (tag, fold) model at one input scale."""

    tag: str
    fold: int | str
    model: dict
    scale: tuple[int, int]
    resize: str
    weight: float
    checkpoint: str
    onnx: str | None = None

    @property
    def name(self) -> str:
        return f"{self.tag}__fold{self.fold}"

    def as_dict(self) -> dict:
        d = {"tag": self.tag, "fold": self.fold, "model": self.model, "scale": list(self.scale),
             "resize": self.resize, "weight": self.weight, "checkpoint": self.checkpoint}
        if self.onnx:
            d["onnx"] = self.onnx
        return d


@dataclass
class Bundle:
    root: Path
    meta: dict
    members: list[Member] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @property
    def postprocess(self) -> dict:
        pp = self.meta.get("postprocess") or {}
        return {"min_component": int(pp.get("min_component", 0)), "fill_holes": bool(pp.get("fill_holes", False))}

    @property
    def tta(self) -> list[str]:
        return list(self.meta.get("tta", ["hflip"]))

    @property
    def folds(self) -> list[int | str]:
        return sorted({m.fold for m in self.members}, key=str)

    def file(self, rel: str, inside: bool = True) -> Path:
        """A file the bundle refers to; weights must lie inside the bundle (ONNX exports may live elsewhere)."""
        p = self.root / rel
        if inside and (Path(rel).is_absolute() or not p.resolve().is_relative_to(self.root.resolve())):
            raise InputError(self.root / "bundle.json", f"member file '{rel}' points outside the bundle",
                             "rebuild the bundle; a bundle only refers to its own files")
        if not p.is_file():
            raise InputError(p, "bundle file missing", "rebuild the bundle ('toothseg train' or build_bundle) "
                             "or re-export ONNX ('toothseg export')")
        return p

    def load_state(self, member: Member) -> dict:
        from toothseg.models.checkpoint import safe_load

        path = self.file(member.checkpoint)
        sd = safe_load(path, "rebuild the bundle ('toothseg train RUN' or build_bundle)")
        if not isinstance(sd, dict) or not sd or not all(hasattr(v, "shape") for v in sd.values()):
            raise InputError(path, "not a state dict of tensors", "rebuild the bundle")
        return sd

    def load_network(self, member: Member):
        """The member's network with its weights, in eval mode; a file that does not fit is one error line."""
        from toothseg.config import ModelConfig
        from toothseg.models.factory import create_model

        sd = self.load_state(member)
        try:
            net = create_model(ModelConfig(**member.model), load_weights=False)
        except Exception as exc:  # an architecture/encoder this toothseg cannot build
            raise InputError(self.root / "bundle.json", f"member {member.name}: cannot build model "
                             f"{member.model.get('name')}/{member.model.get('encoder')} ({exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0][:120] if str(exc) else ''})", "rebuild the bundle") from None
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise InputError(self.root / member.checkpoint, f"weights do not fit member {member.name}'s architecture "
                             f"({' '.join(str(exc).split())[:200]})", "rebuild the bundle") from None
        return net.eval()

    def select(self, folds: list[int] | None) -> list[Member]:
        """Members of the given folds (all when None); weights are renormalised by the caller."""
        if folds is None:
            return list(self.members)
        want = {str(f) for f in folds}
        chosen = [m for m in self.members if str(m.fold) in want]
        if not chosen:
            raise ToothsegError(f"{self.root}: no member for folds {sorted(want)}; the bundle has folds "
                                f"{[str(f) for f in self.folds]}")
        return chosen

    def save(self) -> None:
        self.meta["members"] = [m.as_dict() for m in self.members]
        write_json(self.root / "bundle.json", self.meta)


# ----------------------------------------------------------------------------------------------------------- loading
_EXTRACTED: list[Path] = []


def _cleanup_extracted() -> None:
    for p in _EXTRACTED:
        shutil.rmtree(p, ignore_errors=True)


atexit.register(_cleanup_extracted)


def _member_from_dict(d: dict, path: Path) -> Member:
    from pydantic import ValidationError

    from toothseg.config import ModelConfig

    fix = "rebuild the bundle with this toothseg version"
    try:
        model = ModelConfig(**dict(d["model"])).model_dump(mode="json")
        m = Member(tag=str(d["tag"]), fold=d["fold"], model=model, scale=tuple(int(x) for x in d["scale"]),
                   resize=str(d.get("resize", "resize")), weight=float(d.get("weight", 1.0)),
                   checkpoint=str(d["checkpoint"]), onnx=d.get("onnx"))
    except ValidationError as exc:
        e = exc.errors()[0]
        raise InputError(path, f"bundle member model is invalid ('{'.'.join(map(str, e['loc']))}': {e['msg']})",
                         fix) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"bundle member is malformed ({exc.__class__.__name__}: {exc})", fix) from None
    if len(m.scale) != 2 or min(m.scale) < 32 or any(v % 32 for v in m.scale):
        raise InputError(path, f"member {m.name}: scale {list(m.scale)} is not two multiples of 32", fix)
    if not math.isfinite(m.weight) or m.weight < 0:
        raise InputError(path, f"member {m.name}: weight {m.weight} must be a finite number >= 0", fix)
    if m.resize not in ("resize", "letterbox"):
        raise InputError(path, f"member {m.name}: unknown resize mode '{m.resize}'", fix)
    return m


def _check_meta(meta: dict, path: Path) -> None:
    """Settings a tampered or hand-edited bundle.json could break, checked when it is opened."""
    fix = "rebuild the bundle or restore its bundle.json"
    if int(meta.get("format_version", BUNDLE_VERSION) or 0) > BUNDLE_VERSION:
        raise InputError(path, f"bundle format {meta['format_version']} is newer than this toothseg reads "
                         f"({BUNDLE_VERSION})", "upgrade toothseg")
    thr = meta.get("threshold", 0.5)
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0.0 <= float(thr) <= 1.0:
        raise InputError(path, f"threshold {thr!r} must be a number in [0, 1]", fix)
    pp = meta.get("postprocess") or {}
    if not isinstance(pp, dict) or not isinstance(pp.get("min_component", 0), int) \
            or isinstance(pp.get("min_component", 0), bool) or int(pp.get("min_component", 0)) < 0 \
            or not isinstance(pp.get("fill_holes", False), bool):
        raise InputError(path, f"postprocess {pp!r} must be {{min_component: int >= 0, fill_holes: bool}}", fix)
    tta = meta.get("tta", ["hflip"])
    if not isinstance(tta, list) or not all(isinstance(t, str) for t in tta):
        raise InputError(path, f"tta {tta!r} must be a list of names such as [\"hflip\"]", fix)


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder, its bundle.json, or a bundle .zip (extracted to a temporary folder for this process)."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() == ".zip":
        try:
            tmp = Path(tempfile.mkdtemp(prefix="toothseg-bundle-"))
            _EXTRACTED.append(tmp)
            with zipfile.ZipFile(p) as zf:
                if any(i.flag_bits & 0x1 for i in zf.infolist()):
                    raise InputError(p, "zip is encrypted (password-protected)",
                                     "unzip it yourself and pass the bundle folder, or re-create it without a password")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, zlib.error) as exc:
            why = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise InputError(p, f"not a readable zip ({why})", "re-create it with build_bundle(..., zip=True)") from None
        hits = sorted(tmp.rglob("bundle.json"), key=lambda q: len(q.parts))
        if not hits:
            raise InputError(p, "zip holds no bundle.json", "zip the bundle folder made by 'toothseg train'")
        p = hits[0].parent
    elif p.is_file() and p.name == "bundle.json":
        p = p.parent
    elif p.is_dir() and not (p / "bundle.json").is_file() and (p / "bundle" / "bundle.json").is_file():
        p = p / "bundle"  # a run folder
    meta_path = p / "bundle.json"
    if not meta_path.is_file():
        raise InputError(path, "not a toothseg bundle (no bundle.json)",
                         "pass RUN/bundle (or RUN, or a bundle .zip) made by 'toothseg train'")
    try:
        meta = read_json(meta_path)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise InputError(meta_path, f"unreadable bundle.json ({str(exc).splitlines()[0][:120]})",
                         "rebuild the bundle") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT or not meta.get("members"):
        raise InputError(meta_path, "not a toothseg bundle or it has no members", "rebuild the bundle")
    if not isinstance(meta["members"], list) or not all(isinstance(d, dict) for d in meta["members"]):
        raise InputError(meta_path, "'members' must be a list of member records", "rebuild the bundle")
    _check_meta(meta, meta_path)
    members = [_member_from_dict(d, meta_path) for d in meta["members"]]
    if sum(m.weight for m in members) <= 0:
        raise InputError(meta_path, "member weights sum to 0", "rebuild the bundle or restore its bundle.json")
    return Bundle(p, meta, members)


# ---------------------------------------------------------------------------------------------------------- building
def extract_state_dict(ckpt: dict, path: Path) -> dict:
    """Network weights of a Lightning checkpoint (keys ``model.*``), without the prefix."""
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise InputError(path, "checkpoint has no state_dict", "re-train this fold")
    out = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    if not out:
        raise InputError(path, "checkpoint has no 'model.*' weights", "save the network as the module's 'model'")
    return out


def _hparams_geometry(ckpt: dict) -> dict:
    """ModelConfig / scale / resize from checkpoint hparams, wherever the trainer nested them."""
    hp = ckpt.get("hyper_parameters") or {}
    found: dict[str, Any] = {}
    stack = [hp]
    while stack:
        d = stack.pop()
        if not isinstance(d, dict):
            continue
        for k in ("model", "scale", "resize"):
            if k in d and k not in found and (k != "model" or isinstance(d[k], dict)):
                found[k] = d[k]
        stack.extend(v for v in d.values() if isinstance(v, dict))
    return found


def _fold_value(s: str) -> int | str:
    return int(s) if s.isdigit() else s


def _collect_tags(run: RunDir, only: list[str] | None = None) -> list[dict]:
    tags = []
    for tag_dir in sorted(p for p in run.train_dir.iterdir() if p.is_dir() and (only is None or p.name in only)):
        info = read_json(tag_dir / "model.json") if (tag_dir / "model.json").is_file() else {}
        folds = []
        for fd in sorted(tag_dir.iterdir()):
            m = _FOLD_DIR.match(fd.name)
            if m and fd.is_dir() and (fd / "best.ckpt").is_file():
                folds.append((_fold_value(m.group(1)), fd))
        if folds:
            tags.append({"tag": info.get("tag", tag_dir.name), "dir": tag_dir, "info": info, "folds": folds})
        else:
            log.warning("%s: no fold*/best.ckpt; tag left out of the bundle", tag_dir)
    return tags


def _read_oof(tag: dict, gt_keys: dict[str, Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for _, fd in tag["folds"]:
        oof_dir = fd / "oof"
        if not oof_dir.is_dir():
            continue
        for png in oof_dir.glob("*/*.png"):
            key = f"{png.parent.name}/{png.stem}"
            if key in gt_keys:
                found[key] = png
    return found


def _tune_on_oof(run: RunDir, tags: list[dict]) -> tuple[dict[str, float], dict, dict | None]:
    """Fusion weights, then threshold + post-processing, on the OOF maps every tag has for labelled images."""
    from toothseg.data.io import read_mask
    from toothseg.data.layout import read_index
    from toothseg.predict.fusion import fuse, tune_tag_weights
    from toothseg.predict.threshold import tune

    names = [t["tag"] for t in tags]
    cv = {t["tag"]: t["info"].get("cv_dice") for t in tags}
    gt_keys = {s.key: s.mask_path for s in read_index(run.samples) if s.mask_path} if run.samples.is_file() else {}
    per_tag = {t["tag"]: _read_oof(t, gt_keys) for t in tags}
    keys = sorted(set.intersection(*(set(v) for v in per_tag.values()))) if per_tag else []
    if not keys:
        log.warning("%s: no out-of-fold predictions with ground truth; threshold 0.5 and no post-processing", run.root)
        return {n: 1.0 / len(names) for n in names}, {"method": "equal (no OOF)"}, None
    gts, oof = [], {n: [] for n in names}
    for key in keys:
        gt = read_mask(gt_keys[key])
        maps = {n: cv2.imread(str(per_tag[n][key]), cv2.IMREAD_GRAYSCALE) for n in names}
        bad = [n for n, m in maps.items() if m is None or m.shape != gt.shape]
        if bad:
            log.warning("%s: OOF map of %s unreadable or not at the mask's size; left out of tuning", key, bad[0])
            continue
        gts.append(gt)
        for n in names:
            oof[n].append(maps[n])
    if not gts:
        return {n: 1.0 / len(names) for n in names}, {"method": "equal (no OOF)"}, None
    weights, fusion_info = tune_tag_weights(oof, gts, cv)
    fused = [fuse([oof[n][i] for n in names], [weights[n] for n in names]) for i in range(len(gts))]
    tuned = tune(fused, gts)
    tuned["oof"]["keys_source"] = "train/<tag>/fold*/oof + samples.csv masks"
    return weights, fusion_info, tuned


def _data_summary(run: RunDir) -> dict:
    from toothseg.data.layout import read_index

    if not run.samples.is_file():
        return {}
    per: dict[str, dict[str, int]] = {}
    for s in read_index(run.samples):
        d = per.setdefault(s.source, {"labelled": 0, "unlabelled": 0})
        d["labelled" if s.labelled else "unlabelled"] += 1
    return {"sources": per, "n_labelled": sum(d["labelled"] for d in per.values()),
            "n_unlabelled": sum(d["unlabelled"] for d in per.values())}


def build_bundle(run: str | Path, out: Path | None = None, zip: bool = False, tags: list[str] | None = None) -> Path:
    """Collect a run's trained folds (of the families ``tags``; default all) into RUN/bundle (or ``out``); returns
    the bundle folder.

    Re-building replaces the previous bundle as a whole (including any ONNX export, which would be stale).
    """
    import torch

    from toothseg.config import ModelConfig
    from toothseg.models.checkpoint import load_checkpoint
    from toothseg.models.factory import create_model

    rd = open_run(run)
    rd.require(rd.train_dir, "train")
    only = tags
    tags = _collect_tags(rd, only)
    if not tags:
        raise ToothsegError(f"{rd.train_dir}: no trained fold (train/<tag>/fold<k>/best.ckpt); run 'toothseg train'")
    if rd.folds.is_file():
        from toothseg.train.provenance import check_run_folds

        folds = rd.read_folds()
        for t in tags:
            check_run_folds(folds, t["folds"])
    out = Path(out) if out is not None else rd.bundle_dir
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "models").mkdir(parents=True)

    members: list[dict] = []
    for t in tags:
        info = t["info"]
        net = None
        for fold, fd in t["folds"]:
            ckpt = load_checkpoint(fd / "best.ckpt")
            hp = _hparams_geometry(ckpt)
            model_d = info.get("model") or hp.get("model")
            scale = info.get("scale") or hp.get("scale")
            if model_d is None or scale is None:
                raise InputError(t["dir"] / "model.json", "model config or scale unknown",
                                 "re-run 'toothseg train' so it writes model.json")
            model_d = ModelConfig(**model_d).model_dump(mode="json")
            sd = extract_state_dict(ckpt, fd / "best.ckpt")
            if net is None:
                net = create_model(ModelConfig(**model_d), load_weights=False)
            try:
                net.load_state_dict(sd, strict=True)  # fail here, not at predict time
            except RuntimeError as exc:
                raise InputError(fd / "best.ckpt", f"weights do not fit model {model_d['name']}/"
                                 f"{model_d['encoder']} ({str(exc).splitlines()[0]})", "re-train this fold") from None
            rel = f"models/{t['tag']}__fold{fold}.pt"
            torch.save(sd, tmp / rel)
            members.append({"tag": t["tag"], "fold": fold, "model": model_d, "scale": [int(x) for x in scale],
                            "resize": info.get("resize") or hp.get("resize") or "resize", "checkpoint": rel})
            del ckpt, sd

    weights, fusion_info, tuned = _tune_on_oof(rd, tags)
    n_folds = {t["tag"]: len(t["folds"]) for t in tags}
    for m in members:
        m["weight"] = round(weights[m["tag"]] / n_folds[m["tag"]], 8)
    cfg = None
    tta = ["hflip"]
    threshold = tuned["threshold"] if tuned else 0.5
    post = dict(tuned["postprocess"]) if tuned else {"min_component": 0, "fill_holes": False}
    fixed: dict = {}  # the run config's explicit predict settings win over the OOF-tuned ones
    if rd.config.is_file():
        c = rd.load_config()
        cfg = c.model_dump(mode="json")
        tta = list(c.predict.tta)
        if c.predict.threshold is not None:
            threshold = fixed["threshold"] = float(c.predict.threshold)
        for k in ("min_component", "fill_holes"):
            v = getattr(c.predict, k)
            if v is not None:
                post[k] = fixed[k] = v
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "toothseg_version": toothseg.__version__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": str(rd.root.resolve()),
        "members": members,
        "tags": {t["tag"]: {"folds": [f for f, _ in t["folds"]], "cv_dice": t["info"].get("cv_dice"),
                            "weight": weights[t["tag"]]} for t in tags},
        "fusion": {"tag_weights": weights, **fusion_info},
        "threshold": threshold,
        "postprocess": post,
        "fixed_by_config": fixed,
        "tta": tta,
        "oof": tuned["oof"] if tuned else None,
        "data": _data_summary(rd),
        "config": cfg,
    }
    write_json(tmp / "bundle.json", meta)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    if zip:
        zpath = out.with_suffix(".zip")
        zpath.unlink(missing_ok=True)
        shutil.make_archive(str(out), "zip", root_dir=out)
    oof = meta["oof"] or {}
    log.info("bundle: %d members, threshold %.2f, post-processing %s, OOF Dice %s -> %s -> %s",
             len(members), meta["threshold"], meta["postprocess"], oof.get("dice_at_0.5"),
             oof.get("dice_tuned_threshold"), oof.get("dice_with_postprocess"))
    return out
