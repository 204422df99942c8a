"""`toothseg prepare DATA... --out RUN`: index the data, find duplicate groups, resolve label conflicts, make folds.

Writes (docs/architecture.md): config.yaml, samples.csv, duplicates.csv, curation.json, folds.json,
splits_final.json and curation.html.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from toothseg.config import Config, build_config
from toothseg.curate.conflicts import POLICIES, GroupDecision, Loaded, Member, resolve
from toothseg.curate.folds import make_folds, nnunet_splits
from toothseg.curate.groups import group_pairs, nearest_in_group
from toothseg.curate.hashing import pair_distances, thumbnail
from toothseg.curate.report import write_report
from toothseg.data.io import read_image, read_mask
from toothseg.preflight import ensure_writable_dir
from toothseg.data.layout import Sample, discover
from toothseg.errors import ConfigError, InputError, ToothsegError
from toothseg.run.folder import RunDir, open_run, setup_logging

log = logging.getLogger("toothseg.curate")
REPORT_NAME = "curation.html"


def _outputs(run: RunDir) -> list[Path]:
    return [run.config, run.samples, run.duplicates, run.curation, run.folds, run.splits_final,
            run.root / REPORT_NAME]


def _config(preset: str, config: str | Path | None, overrides: list[str] | None, policy: str | None,
            threshold: int | None, n_folds: int | None) -> Config:
    cfg = build_config(preset, config, overrides)
    try:
        if policy is not None:
            cfg.curate.policy = policy  # type: ignore[assignment]
        if threshold is not None:
            cfg.curate.hash_threshold = threshold
        if n_folds is not None:
            cfg.curate.n_folds = n_folds
    except ValidationError as exc:
        e = exc.errors()[0]
        hint = f"choose one of {', '.join(POLICIES)}" if e["loc"][0] == "policy" else "check the value"
        raise ConfigError(f"invalid curation option '{e['loc'][0]}': {e['msg']}; {hint}") from None
    return cfg


def _load(s: Sample) -> Loaded:
    img = read_image(s.image_path)
    fraction = None
    if s.mask_path is not None:
        mask = read_mask(s.mask_path)
        if mask.shape != img.shape:
            raise InputError(s.mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                             f"{img.shape[1]}x{img.shape[0]}", "save the mask at the image's size")
        fraction = float(mask.mean())
    return Loaded(s, thumbnail(img), fraction)


def _load_all(samples: list[Sample]) -> tuple[list[Loaded], dict[str, str]]:
    """Read every sample (2 threads: decoding releases the GIL); unreadable ones are reported, not fatal."""
    def safe(s: Sample) -> Loaded | str:
        try:
            return _load(s)
        except InputError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(safe, samples))
    loaded = [r for r in results if isinstance(r, Loaded)]
    bad = {s.key: r for s, r in zip(samples, results) if isinstance(r, str)}
    for key, msg in bad.items():
        log.warning("skipped %s: %s", key, msg)
    return loaded, bad


def _resolve_groups(loaded: list[Loaded], groups: list[list[int]], conflict_dice: float
                    ) -> dict[str, list[GroupDecision]]:
    """Every group resolved under every policy (the summary compares them), each group's masks read once."""
    by_policy: dict[str, list[GroupDecision]] = {p: [] for p in POLICIES}
    for g in groups:
        members = []
        for i in g:
            it = loaded[i]
            mask = read_mask(it.sample.mask_path) if it.sample.mask_path is not None else None
            members.append(Member(it.sample.key, it.sample.labelled, i, it.thumb, mask))
        for policy, decisions in by_policy.items():
            decisions.append(resolve(members, policy, conflict_dice))
    return by_policy


def _duplicate_rows(loaded: list[Loaded], groups: list[list[int]], final: np.ndarray,
                    items: dict[str, dict]) -> list[list]:
    rows = []
    for gid, g in enumerate(groups):
        near = nearest_in_group(final, g)
        for i in g:
            s, use = loaded[i].sample, items[loaded[i].sample.key]["use"]
            rows.append([gid, s.source, s.image_id, int(s.labelled), near[i], int(use != "drop"), use])
    return rows


def prepare(data_dirs: list[str | Path], out: str | Path, preset: str = "cpu", config: str | Path | None = None,
            overrides: list[str] | None = None, policy: str | None = None, threshold: int | None = None,
            n_folds: int | None = None, overwrite: bool = False) -> dict:
    """Curate one or more dataset folders into a run folder; returns the summary also stored in curation.json."""
    t0 = time.perf_counter()
    cfg = _config(preset, config, overrides, policy, threshold, n_folds)
    cc = cfg.curate
    ensure_writable_dir(out)
    run = open_run(out, create=True)
    existing = [p for p in _outputs(run) if p.exists()]
    if existing and not overwrite:
        raise ToothsegError(f"{existing[0]}: run folder already prepared; pass --overwrite to redo the curation "
                            "or choose another --out")
    setup_logging(run)
    ds = discover([Path(d) for d in data_dirs])
    for pr in ds.problems:
        log.warning("%s: %s: %s", pr.level, pr.path, pr.problem)

    loaded, bad = _load_all(ds.samples)
    t_read = time.perf_counter() - t0
    dist = pair_distances([it.thumb for it in loaded], cc.hash_size, cc.align_bound)
    groups = group_pairs(dist.final, cc.hash_threshold)
    t_hash = time.perf_counter() - t0 - t_read

    by_policy = _resolve_groups(loaded, groups, cc.conflict_dice)
    decisions = by_policy[cc.policy]
    items = {key: {"group": None, "use": "drop", "reason": f"unreadable: {msg}"} for key, msg in bad.items()}
    group_of_index = {i: gid for gid, g in enumerate(groups) for i in g}
    for i, it in enumerate(loaded):
        gid = group_of_index.get(i)
        if gid is None:
            items[it.sample.key] = {"group": None, "use": "train", "reason": "no copy found"}
        else:
            items[it.sample.key] = {"group": gid, **decisions[gid].items[it.sample.key]}

    # Folds: labelled samples used for training; copies kept together share their group.
    fold_items = [it for it in loaded if it.sample.labelled and items[it.sample.key]["use"] == "train"]
    keys = [it.sample.key for it in fold_items]
    fold_groups = [f"g{items[k]['group']}" if items[k]["group"] is not None else k for k in keys]
    folds = make_folds(keys, fold_groups, [it.sample.source for it in fold_items],
                       [it.fraction or 0.0 for it in fold_items], cc.n_folds, cc.area_bins, cfg.seed)

    summary = _summary(ds.samples, loaded, bad, groups, decisions, items, folds, by_policy, cc.policy,
                       cc.hash_threshold)
    summary["pairs_registered"] = dist.n_registered
    summary["seconds"] = {"read": round(t_read, 1), "hash_group": round(t_hash, 1)}

    summary["dataset_problems"] = len(ds.problems)
    # Written only now: a run that fails above (e.g. too few groups for the folds) leaves no half-prepared folder.
    run.save_config(cfg)
    run.write_samples(ds)
    run.write_duplicates(_duplicate_rows(loaded, groups, dist.final, items))
    run.write_folds(folds, nnunet_splits(folds))
    write_report(run.root / REPORT_NAME, summary, loaded, groups, decisions, items, dist, cc.hash_threshold)
    summary["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    run.write_curation({
        "summary": summary,
        "threshold": cc.hash_threshold,
        "policy": cc.policy,
        "items": items,
        "groups": [_group_json(gid, g, loaded, d) for gid, (g, d) in enumerate(zip(groups, decisions))],
    })
    log.info("prepared %s: %d images, %d duplicate groups (%d images), %d conflicts, %d folds",
             run.root, summary["images"], summary["groups"], summary["images_in_groups"],
             summary["groups_conflicting"], len(folds))
    return summary


def _group_json(gid: int, g: list[int], loaded: list[Loaded], d: GroupDecision) -> dict:
    return {"group": gid, "members": [loaded[i].sample.key for i in g], "conflict": d.conflict,
            "dice": [{"a": a, "b": b, "dice": round(v, 4)} for (a, b), v in d.dice.items()],
            "fineness": {k: round(v, 5) for k, v in d.fineness.items()}}


def _summary(samples: list[Sample], loaded: list[Loaded], bad: dict[str, str], groups: list[list[int]],
             decisions: list[GroupDecision], items: dict[str, dict], folds: dict, by_policy: dict, policy: str,
             threshold: int) -> dict:
    def lab(i: int) -> bool:
        return loaded[i].sample.labelled

    uses = [v["use"] for v in items.values()]
    per_policy = {}
    for p, decs in by_policy.items():
        u = [v["use"] for d in decs for v in d.items.values()]
        per_policy[p] = {"train": u.count("train"), "drop": u.count("drop"),
                         "label_from": sum(x.startswith("label-from:") for x in u)}
    return {
        "policy": policy,
        "threshold": threshold,
        "images": len(samples),
        "labelled": sum(s.labelled for s in samples),
        "unlabelled": sum(not s.labelled for s in samples),
        "unreadable": len(bad),
        "groups": len(groups),
        "images_in_groups": sum(len(g) for g in groups),
        "groups_cross_set": sum(any(lab(i) for i in g) and not all(lab(i) for i in g) for g in groups),
        "groups_cross_source": sum(len({loaded[i].sample.source for i in g}) > 1 for g in groups),
        "groups_labelled_pairs": sum(bool(d.dice) for d in decisions),
        "groups_conflicting": sum(d.conflict for d in decisions),
        "dropped": uses.count("drop"),
        "label_from": sum(u.startswith("label-from:") for u in uses),
        "in_folds": len(folds["0"]["train"]) + len(folds["0"]["val"]),
        "fold_val_sizes": [len(f["val"]) for f in folds.values()],
        "group_members_by_policy": per_policy,
    }
