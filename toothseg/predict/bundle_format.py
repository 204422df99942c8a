"""The bundle format: everything inference needs, in one folder (optionally zipped), free of Lightning.

    bundle/
      bundle.json          members (tag, fold, ModelConfig, scale, resize, weight, checkpoint[, onnx]), fusion
                           weights, OOF-tuned threshold and post-processing, TTA, config, data summary, versions
      models/<tag>__fold<k>.pt   plain state dicts of the networks (no "model." prefix)
      onnx/<tag>__fold<k>.onnx   after `toothseg export` (sigmoid included: outputs probabilities)

This module reads, checks and writes that format (a tampered or hand-edited bundle is refused with one line);
`bundle_build` makes bundles from a run and `bundle_tune` chooses their fusion weights and threshold.
"""

from __future__ import annotations

import json
import math
import tempfile
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toothseg.errors import InputError, ToothsegError, first_line
from toothseg.run.folder import read_json, write_json

BUNDLE_FORMAT = "toothseg-bundle"
BUNDLE_VERSION = 1


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

    def load_network(self, member: Member):
        """The member's network with its weights, in eval mode; a file that does not fit is one error line."""
        from toothseg.config import ModelConfig
        from toothseg.models.checkpoint import load_strict, safe_load
        from toothseg.models.factory import create_model

        path = self.file(member.checkpoint)
        sd = safe_load(path, "rebuild the bundle ('toothseg train RUN' or build_bundle)")
        if not isinstance(sd, dict) or not sd or not all(hasattr(v, "shape") for v in sd.values()):
            raise InputError(path, "not a state dict of tensors", "rebuild the bundle")
        try:
            net = create_model(ModelConfig(**member.model), load_weights=False)
        except Exception as exc:  # an architecture/encoder this toothseg cannot build
            raise InputError(self.root / "bundle.json", f"member {member.name}: cannot build model "
                             f"{member.model.get('name')}/{member.model.get('encoder')} ({exc.__class__.__name__}: "
                             f"{first_line(exc, 120)})", "rebuild the bundle") from None
        return load_strict(net, sd, self.root / member.checkpoint, f"member {member.name}'s architecture",
                           "rebuild the bundle").eval()

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
        self.meta["members"] = [{k: v for k, v in asdict(m).items() if v or k != "onnx"} for m in self.members]
        write_json(self.root / "bundle.json", self.meta)


_EXTRACTED: list[tempfile.TemporaryDirectory] = []  # extracted zips, removed when the process exits


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
    min_component = pp.get("min_component", 0) if isinstance(pp, dict) else None
    if type(min_component) is not int or min_component < 0 or not isinstance(pp.get("fill_holes", False), bool):
        raise InputError(path, f"postprocess {pp!r} must be {{min_component: int >= 0, fill_holes: bool}}", fix)
    tta = meta.get("tta", ["hflip"])
    if not isinstance(tta, list) or not all(isinstance(t, str) for t in tta):
        raise InputError(path, f"tta {tta!r} must be a list of names such as [\"hflip\"]", fix)


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder, its bundle.json, or a bundle .zip (extracted to a temporary folder for this process)."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() == ".zip":
        try:
            _EXTRACTED.append(tempfile.TemporaryDirectory(prefix="toothseg-bundle-"))
            tmp = Path(_EXTRACTED[-1].name)
            with zipfile.ZipFile(p) as zf:
                if any(i.flag_bits & 0x1 for i in zf.infolist()):
                    raise InputError(p, "zip is encrypted (password-protected)",
                                     "unzip it yourself and pass the bundle folder, or re-create it without a password")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, zlib.error) as exc:
            why = first_line(exc, default=exc.__class__.__name__)
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
        raise InputError(meta_path, f"unreadable bundle.json ({first_line(exc, 120)})",
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
