"""Build a bundle from a run: choose its model families, turn their checkpoints into plain weights, tune on OOF maps
(`bundle_tune`) and swap the finished folder in whole.

The members are listed, never implied by what lies under ``train/``: by default the families the run config chose
(``model`` + ``models`` at their scales, and the students of its pseudo-label schedule), or the tags named. An
ablation arm or a stale tag trained into the same run stays out of the deployed bundle unless it is named.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import toothseg
from toothseg.errors import InputError, ToothsegError
from toothseg.predict.bundle_format import BUNDLE_FORMAT, BUNDLE_VERSION
from toothseg.predict.bundle_tune import predict_settings, tune_on_oof
from toothseg.run.folder import RunDir, open_run, write_json

log = logging.getLogger("toothseg")


@dataclass(frozen=True)
class Member:
    """One trained model family: ``train/<tag>`` with its model.json and its ``fold<k>/best.ckpt`` folders."""

    tag: str
    dir: Path
    info: dict
    folds: list[tuple[int | str, Path]]


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


def trained_families(run: RunDir) -> list[Member]:
    """Every ``train/<tag>`` with at least one trained fold folder."""
    families = []
    for fam in run.families():
        folds = [(f.k, f.path) for f in fam.folds(trained=True)]
        info = fam.info()
        if folds:
            families.append(Member(info.get("tag", fam.tag), fam.path, info, folds))
        else:
            log.warning("%s: no fold<k>/best.ckpt; tag left out of the bundle", fam.path)
    return families


def _is_model(info: dict, wanted: dict) -> bool:
    from toothseg.config import ModelConfig

    try:
        return ModelConfig(**dict(info.get("model") or {})).model_dump(mode="json") == wanted
    except (TypeError, ValueError):
        return False


def chosen_tags(run: RunDir, families: list[Member]) -> list[str]:
    """The families the run config chose: its models at their scales, then the students of its schedule (round by
    round, each taught by an already chosen family or by ``pseudo.teacher``)."""
    if not run.config.is_file():
        raise InputError(run.config, "no run config to tell which trained families make the bundle",
                         "name them: toothseg bundle RUN --members TAG,TAG")
    cfg = run.load_config()
    wanted = [(m.model_dump(mode="json"), [list(s) for s in (m.scales or cfg.train.scales)])
              for m in [cfg.model, *cfg.models]]
    chosen = [f.tag for f in families if f.info.get("schedule") is None and any(
        _is_model(f.info, d) and list(f.info.get("scale") or []) in scales for d, scales in wanted)]
    p = cfg.pseudo
    teachers = set(chosen) | ({p.teacher} if p.teacher else set())
    for f in sorted(families, key=lambda f: int(f.info.get("round") or 0)):
        i = f.info
        if i.get("schedule") == p.schedule and bool(i.get("soft")) == p.soft and int(i.get("round") or 1) <= p.rounds \
                and (i.get("teacher") in teachers or (i.get("teacher") is None and _is_model(i, wanted[0][0]))):
            chosen.append(f.tag)
            teachers.add(f.tag)
    return chosen


def select_families(run: RunDir, members: list[str] | None) -> list[Member]:
    """The families named in ``members`` (all must be trained), or `chosen_tags` when None."""
    families = trained_families(run)
    if not families:
        raise ToothsegError(f"{run.train_dir}: no trained fold (train/<tag>/fold<k>/best.ckpt); run 'toothseg train'")
    by_tag = {f.tag: f for f in families}
    names = chosen_tags(run, families) if members is None else list(dict.fromkeys(members))
    unknown = [t for t in names if t not in by_tag]
    if unknown:
        raise ToothsegError(f"{run.train_dir}: no trained model family '{unknown[0]}'; trained: {', '.join(by_tag)}")
    if not names:
        raise ToothsegError(f"{run.train_dir}: none of the trained families ({', '.join(by_tag)}) is the config's "
                            "model/models or one of their students; name them with --members TAG,TAG")
    left_out = [t for t in by_tag if t not in names]
    if left_out:
        log.info("bundle: %s left out (not chosen by the run config; name them with --members to include)",
                 ", ".join(left_out))
    return [by_tag[t] for t in names]


def _bundle_member(family: Member, fold: int | str, fd: Path, tmp: Path, net: Any) -> tuple[dict, Any]:
    """Write one fold's network weights into the bundle being built; returns its member record (and the net)."""
    import torch

    from toothseg.config import ModelConfig
    from toothseg.models.checkpoint import load_checkpoint, load_strict
    from toothseg.models.factory import create_model

    ckpt = load_checkpoint(fd / "best.ckpt")
    hp = _hparams_geometry(ckpt)
    model_d = family.info.get("model") or hp.get("model")
    scale = family.info.get("scale") or hp.get("scale")
    if model_d is None or scale is None:
        raise InputError(family.dir / "model.json", "model config or scale unknown",
                         "re-run 'toothseg train' so it writes model.json")
    model_d = ModelConfig(**model_d).model_dump(mode="json")
    sd = extract_state_dict(ckpt, fd / "best.ckpt")
    if net is None:
        net = create_model(ModelConfig(**model_d), load_weights=False)
    load_strict(net, sd, fd / "best.ckpt", f"model {model_d['name']}/{model_d['encoder']}", "re-train this fold")
    rel = f"models/{family.tag}__fold{fold}.pt"
    torch.save(sd, tmp / rel)
    return {"tag": family.tag, "fold": fold, "model": model_d, "scale": [int(x) for x in scale],
            "resize": family.info.get("resize") or hp.get("resize") or "resize", "checkpoint": rel}, net


def _data_summary(run: RunDir) -> dict:
    if not run.samples.is_file():
        return {}
    per: dict[str, dict[str, int]] = {}
    for s in run.read_samples():
        d = per.setdefault(s.source, {"labelled": 0, "unlabelled": 0})
        d["labelled" if s.labelled else "unlabelled"] += 1
    return {"sources": per, "n_labelled": sum(d["labelled"] for d in per.values()),
            "n_unlabelled": sum(d["unlabelled"] for d in per.values())}


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``tmp`` folder; readers see the old bundle or the new one, never a mix."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def build_bundle(run: str | Path, out: Path | None = None, zip: bool = False,
                 members: list[str] | None = None) -> Path:
    """Collect the folds of the chosen families (``members``: tags; None = `chosen_tags`) into RUN/bundle (or
    ``out``); returns the bundle folder.

    Re-building replaces the previous bundle as a whole (including any ONNX export, which would be stale).
    """
    import torch

    rd = open_run(run)
    rd.require(rd.train_dir, "train")
    families = select_families(rd, members)
    if rd.folds.is_file():
        from toothseg.train.provenance import check_run_folds

        folds = rd.read_folds()
        for f in families:
            check_run_folds(folds, f.folds)
    out = Path(out) if out is not None else rd.bundle_dir
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "models").mkdir(parents=True)

    records: list[dict] = []
    for f in families:
        net = None
        for fold, fd in f.folds:
            member, net = _bundle_member(f, fold, fd, tmp, net)
            records.append(member)

    tuning = tune_on_oof(rd, {f.tag: [fd for _, fd in f.folds] for f in families},
                         {f.tag: f.info.get("cv_dice") for f in families})
    n_folds = {f.tag: len(f.folds) for f in families}
    for m in records:
        m["weight"] = round(tuning.weights[m["tag"]] / n_folds[m["tag"]], 8)
    settings = predict_settings(rd, tuning.tuned)
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "toothseg_version": toothseg.__version__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": str(rd.root.resolve()),
        "members": records,
        "chosen_by": "config" if members is None else "--members",
        "tags": {f.tag: {"folds": [k for k, _ in f.folds], "cv_dice": f.info.get("cv_dice"),
                         "weight": tuning.weights[f.tag]} for f in families},
        "fusion": {"tag_weights": tuning.weights, **tuning.fusion},
        "threshold": settings["threshold"],
        "postprocess": settings["postprocess"],
        "fixed_by_config": settings["fixed_by_config"],
        "tta": settings["tta"],
        "oof": tuning.tuned["oof"] if tuning.tuned else None,
        "data": _data_summary(rd),
        "config": settings["config"],
    }
    write_json(tmp / "bundle.json", meta)
    _swap_in(tmp, out)
    if zip:
        out.with_suffix(".zip").unlink(missing_ok=True)
        shutil.make_archive(str(out), "zip", root_dir=out)
    oof = meta["oof"] or {}
    log.info("bundle: %d members, threshold %.2f, post-processing %s, OOF Dice %s -> %s -> %s",
             len(records), meta["threshold"], meta["postprocess"], oof.get("dice_at_0.5"),
             oof.get("dice_tuned_threshold"), oof.get("dice_with_postprocess"))
    return out
