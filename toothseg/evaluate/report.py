"""`toothseg report RUN`: one self-contained HTML page a dentist or reviewer can open anywhere.

It reads whatever the run folder holds (docs/architecture.md lists the files) and skips, with a note, the sections
of stages that have not run. Pictures are embedded as base64 PNG, so the page can be mailed or archived alone.
RUN/reports/report.html is the run's own derived file and is rebuilt on every call; an explicit ``out`` that
already exists is only replaced with ``overwrite``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from toothseg.atomic import atomic_write_text
from toothseg.errors import ToothsegError
from toothseg.run.family import Family, FoldDir, read_oof
from toothseg.run.files import read_csv, to_float
from toothseg.run.folder import Curation, RunDir, open_run, read_json

log = logging.getLogger("toothseg")
OOF_METRICS = ("dice", "iou", "hd95")


def _json(path: Path) -> Any:
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable JSON (%s); section skipped", path, exc)
        return None


def _oof_rows(fam: Family) -> list[dict[str, Any]]:
    """OOF rows of every fold: key, source, fold, dice, iou, hd95 (floats)."""
    rows = []
    for fd in (f for f in fam.folds() if f.oof_csv.is_file()):
        try:
            oof = read_oof(fd.oof_csv)
        except (KeyError, ValueError) as exc:
            log.warning("%s: unreadable (%s); fold left out of the report", fd.oof_csv, exc)
            continue
        rows += [{**r, "source": r["key"].partition("/")[0], "fold": fd.path.name} for r in oof]
    return rows


def read_training_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning CSVLogger metrics.csv -> {column: [(epoch, last finite value in that epoch), ...]}.

    Train and validation rows are logged separately (NaN in the other columns), so each column is collapsed per
    epoch independently.
    """
    per: dict[str, dict[float, float]] = defaultdict(dict)
    for r in read_csv(path) if path.is_file() else []:
        epoch = to_float(r.get("epoch"))
        if not math.isfinite(epoch):
            continue
        for col, raw in r.items():
            if col in ("epoch", "step") or col is None:
                continue
            v = to_float(raw)
            if math.isfinite(v):
                per[col][epoch] = v
    return {c: sorted(d.items()) for c, d in per.items()}


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.{digits}f}"
    return _esc(v)


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(("<tr class='total'>" if r and r[0] == "all" else "<tr>") + "".join(f"<td>{_fmt(c)}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(b64: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" alt="{_esc(alt)}" src="data:image/png;base64,{b64}">' if b64 else ""


def _skipped(what: str, command: str) -> str:
    return f'<p class="skip">{_esc(what)} not found: run <code>{_esc(command)}</code> to fill this section.</p>'


def _mean(vals: list[float]) -> float:
    x = [v for v in vals if math.isfinite(v)]
    return float(np.mean(x)) if x else float("nan")


def _metric_table(rows: list[dict[str, Any]], group: str, metrics: tuple[str, ...]) -> str:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r[group]].append(r)
    body = [[g, len(rs), *[_mean([r[m] for r in rs]) for m in metrics]] for g, rs in sorted(groups.items())]
    body.append(["all", len(rows), *[_mean([r[m] for r in rows]) for m in metrics]])
    return _table([group, "n", *[f"mean {m}" for m in metrics]], body, "num")


def _section_dataset(run: RunDir) -> str:
    samples = run.read_samples() if run.samples.is_file() else []
    if not samples:
        return _skipped("samples.csv", f"toothseg prepare DATA... --out {run.root}")
    by_src: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in samples:
        by_src[s.source][0 if s.labelled else 1] += 1
    rows = [[src, a + b, a, b] for src, (a, b) in sorted(by_src.items())]
    rows.append(["all", len(samples), sum(r[2] for r in rows), sum(r[3] for r in rows)])
    out = _table(["source", "images", "labelled", "unlabelled"], rows, "num")
    try:
        cur = run.read_curation()  # no curation.json: an empty one
    except ToothsegError as exc:
        log.warning("%s; curation section skipped", exc)
        cur = Curation()
    if cur.summary:
        out += "<h3>Curation summary</h3>" + _table(["item", "value"], [
            [k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in cur.summary.items()])
    uses = Counter("label-from (reuses a duplicate's label)" if d.label_from else d.use for d in cur.items.values())
    reasons = Counter(d.reason for d in cur.items.values() if d.use != "train" and d.reason)
    if uses:
        out += "<h3>Decisions per image</h3>" + _table(["use", "images"], sorted(uses.items()), "num")
    if reasons:
        out += _table(["reason (non-train decisions)", "images"], sorted(reasons.items(), key=lambda kv: -kv[1])[:15],
                      "num")
    if cur.threshold is not None:
        out += f"<p>Perceptual-hash distance threshold: {_esc(cur.threshold)}.</p>"
    dups = run.read_duplicates()
    if dups:
        groups: dict[str, list[dict[str, str]]] = defaultdict(list)
        for d in dups:
            groups[d.get("group_id", "")].append(d)
        sizes = Counter(len(g) for g in groups.values())
        cross = sum(len({d.get("source") for d in g}) > 1 for g in groups.values())
        out += (f"<h3>Duplicates</h3><p>{len(groups)} duplicate groups holding {len(dups)} images; "
                f"{cross} groups span more than one source.</p>"
                + _table(["group size", "groups"], sorted(sizes.items()), "num"))
    elif run.samples.is_file():
        out += "<p>No duplicates.csv (or no duplicates found).</p>"
    try:
        folds = run.read_folds() if run.folds.is_file() else {}
    except ToothsegError as exc:
        log.warning("%s; folds table skipped", exc)
        folds = {}
    if folds:
        def src_counts(keys: list[str]) -> str:
            c = Counter(k.split("/", 1)[0] for k in keys)
            return ", ".join(f"{s} {n}" for s, n in sorted(c.items()))

        out += "<h3>Folds</h3>" + _table(
            ["fold", "train", "val", "val by source"],
            [[k, len(v.get("train", [])), len(v.get("val", [])), src_counts(v.get("val", []))]
             for k, v in sorted(folds.items())], "num")
    return out


def _section_cv(run: RunDir, tags: list[Family]) -> tuple[str, str, str]:
    """(CV tables, training curves, per-source breakdown) for every trained tag."""
    from toothseg.evaluate.plots import histograms, training_curves

    if not tags:
        s = _skipped("train/", f"toothseg train {run.root}")
        return s, s, ""
    cv, curves, per_source = "", "", ""
    for tag in tags:
        name = tag.tag
        model = _json(tag.info_file) or {}
        desc = ""
        if model:
            m = model.get("model") or {}
            desc = (f"<p>{_esc(m.get('name', ''))} / {_esc(m.get('encoder', ''))}, scale {_esc(model.get('scale', ''))}"
                    + (f", CV Dice {_fmt(to_float(model.get('cv_dice')))}" if model.get("cv_dice") is not None else "")
                    + "</p>")
        oof = _oof_rows(tag)
        cv += f"<h3>{_esc(name)}</h3>{desc}"
        if oof:
            cv += _metric_table(oof, "fold", OOF_METRICS)
            cv += _img(histograms({m: [r[m] for r in oof] for m in OOF_METRICS}, f"{name}: out-of-fold metrics",
                                  groups=[r["source"] for r in oof]), f"{name} OOF histograms")
            per_source += f"<h3>{_esc(name)} (out-of-fold)</h3>" + _metric_table(oof, "source", OOF_METRICS)
        else:
            cv += "<p class='skip'>No oof.csv in the fold folders yet.</p>"
        logs = {fd.path.name: history for fd in tag.folds() if (history := read_training_log(fd.path / "metrics.csv"))}
        curves += f"<h3>{_esc(name)}</h3>" + (_img(training_curves(logs, name), f"{name} training curves")
                                              if logs else "<p class='skip'>No metrics.csv logs.</p>")
    return cv, curves, per_source


def _section_evaluation(run: RunDir) -> tuple[str, str]:
    """(evaluation summary + histograms, per-source table) from RUN/reports/metrics.csv."""
    from toothseg.evaluate.evaluate import PROBLEMS, SCORES, read_metrics_csv
    from toothseg.evaluate.plots import histograms

    path = run.reports_dir / "metrics.csv"
    if not path.is_file():
        return _skipped("reports/metrics.csv", f"toothseg evaluate PRED_DIR GT_DIR --out {run.reports_dir}"), ""
    rows = read_metrics_csv(path)
    summary = _json(run.reports_dir / "summary.json")
    out = ""
    if isinstance(summary, dict):
        out += (f"<p>Predictions <code>{_esc(summary.get('pred_dir', ''))}</code> against "
                f"<code>{_esc(summary.get('gt_dir', ''))}</code>: {summary.get('n_images', len(rows))} images, "
                f"{summary.get('n_failed', 0)} failures.</p>")
        tab = []
        for m, d in (summary.get("metrics") or {}).items():
            lo, hi = d.get("ci95", [None, None])
            tab.append([m, to_float(d.get("mean")), to_float(d.get("median")), to_float(d.get("std")),
                        f"[{_fmt(to_float(lo))}, {_fmt(to_float(hi))}]"])
        out += _table(["metric", "mean", "median", "std", "95% CI of the mean"], tab, "num")
        for key in ("missing", "failed", "extra"):
            if summary.get(key):
                out += (f"<p class='warn'>{PROBLEMS[key].capitalize()} ({len(summary[key])}): "
                        f"{_esc(', '.join(summary[key][:30]))}</p>")
    scored = [r for r in rows if r.get("status") != "gt-error"]
    out += _img(histograms({m: [r[m] for r in scored] for m in SCORES}, "held-out evaluation",
                           groups=[r.get("source", "") for r in scored]), "evaluation histograms")
    return out, "<h3>Evaluation</h3>" + _metric_table(scored, "source", SCORES) if scored else ""


def _section_pseudo(run: RunDir) -> str:
    from toothseg.evaluate.plots import histograms

    labels = run.pseudo_labels()
    rows = labels.read_scores() if labels.scores_csv.is_file() else []
    if not rows:
        if run.config.is_file() and run.load_config().pseudo.schedule == "consistency":
            return ("<p>This run's schedule, <code>consistency</code>, learns from the unlabelled images online (an "
                    "EMA teacher's confident pixels), so it writes no offline pseudo-labels; "
                    f"<code>{_esc(f'toothseg pseudo-label {run.root}')}</code> scores them if you want them.</p>")
        return _skipped("pseudo/scores.csv", f"toothseg pseudo-label {run.root}")
    selected = [r.selected for r in rows]
    numeric = [c for c in rows[0].scores if all(math.isfinite(r.scores.get(c, math.nan)) for r in rows[:20])]
    out = f"<p>{len(rows)} unlabelled images scored; {sum(selected)} selected as pseudo-labels.</p>"
    out += _img(histograms({c: [r.scores[c] for r in rows] for c in numeric[:4]}, "pseudo-label confidence",
                           groups=["selected" if s else "not selected" for s in selected]), "pseudo histograms")
    return out


def _threshold(run: RunDir) -> float:
    meta = _json(run.bundle_dir / "bundle.json")
    t = to_float(meta.get("threshold")) if isinstance(meta, dict) else float("nan")
    return t if math.isfinite(t) and 0 < t < 1 else 0.5


def _section_worst(run: RunDir, tags: list[Family], n_worst: int) -> str:
    """The lowest-Dice OOF images of the best tag, as TP/FP/FN overlays at the bundle threshold."""
    from toothseg.data.io import read_image, read_mask
    from toothseg.evaluate.metrics import mask_metrics
    from toothseg.evaluate.overlays import FN_RGB, FP_RGB, TP_RGB, error_overlay, png_b64

    scored = [(t, rows) for t in tags if (rows := _oof_rows(t))]
    if not scored:
        return _skipped("out-of-fold predictions", f"toothseg train {run.root}")
    tag, rows = max(scored, key=lambda tr: _mean([r["dice"] for r in tr[1]]))
    try:
        samples = {s.key: s for s in run.read_samples()}
    except ToothsegError as exc:
        return f"<p class='skip'>{_esc(exc)}</p>"
    thr = _threshold(run)
    worst = sorted((r for r in rows if math.isfinite(r["dice"])), key=lambda r: r["dice"])[:n_worst]
    swatch = "".join(f'<span class="sw" style="background:rgb{c}"></span>{label} '
                     for c, label in ((TP_RGB, "correct tooth"), (FP_RGB, "false positive (predicted, not in the "
                                      "label)"), (FN_RGB, "false negative (label missed)")))
    out = (f"<p>Model <b>{_esc(tag.tag)}</b>, out-of-fold probability &ge; {thr:.2f} against the ground truth. "
           f"{swatch}</p><div class='cases'>")
    for r in worst:
        key = r["key"]
        s = samples.get(key)
        try:
            if s is None or s.mask_path is None:
                raise ToothsegError(f"{key}: not a labelled sample in samples.csv")
            gt = read_mask(s.mask_path)
            prob = read_image(FoldDir(tag.path / r["fold"]).oof_map(key))
            pred = prob >= round(thr * 255)
            try:
                image = read_image(s.image_path)
            except ToothsegError:
                image = None
            pic = png_b64(error_overlay(image if image is not None and image.shape == gt.shape else None, pred, gt))
            m = mask_metrics(pred, gt)  # error_overlay has refused a prediction of another size
        except (ToothsegError, ValueError) as exc:
            out += f"<figure class='case'><figcaption>{_esc(key)}: {_esc(exc)}</figcaption></figure>"
            continue
        caption = (f"<b>{_esc(key)}</b> ({_esc(r['fold'])}) Dice {_fmt(m['dice'], 3)}, IoU {_fmt(m['iou'], 3)}, "
                   f"HD95 {_fmt(m['hd95'], 1)} px; FP {int((pred & ~gt).sum())} px, FN {int((~pred & gt).sum())} px")
        out += f"<figure class='case'>{_img(pic, key, 'overlay')}<figcaption>{caption}</figcaption></figure>"
    return out + "</div>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1250px;padding:1em 2em;
color:#222;line-height:1.4}
h1{margin-bottom:.1em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3;text-align:left}table.num td+td{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:600}.meta{color:#666}.skip{color:#888;font-style:italic}.warn{color:#a40}
img.plot{max-width:100%;display:block;margin:.5em 0}nav a{margin-right:1em}
.cases{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:1em}
figure.case{margin:0;border:1px solid #ddd;padding:.4em;background:#fafafa}img.overlay{width:100%;display:block}
figcaption{font-size:.85em;margin-top:.3em}.sw{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 .8em;
vertical-align:middle;border:1px solid #555}code{background:#f3f3f3;padding:0 .2em}
"""


def build_html(run: RunDir, n_worst: int = 8) -> str:
    """The report page for a run folder, as a string."""
    tags = run.families()
    cfg_line = ""
    if run.config.is_file():
        try:
            cfg = run.load_config()
            cfg_line = (f"preset <b>{_esc(cfg.preset)}</b>, model {_esc(cfg.model.name)} / {_esc(cfg.model.encoder)}, "
                        f"scales {_esc(cfg.train.scales)}, pseudo-label schedule {_esc(cfg.pseudo.schedule)}")
        except ToothsegError as exc:
            cfg_line = f"config.yaml unreadable: {_esc(exc)}"
    cv, curves, per_source = _section_cv(run, tags)
    ev, ev_source = _section_evaluation(run)
    sections = [
        ("dataset", "Dataset and curation", _section_dataset(run)),
        ("cv", "Cross-validation (out-of-fold)", cv),
        ("curves", "Training curves", curves),
        ("evaluation", "Held-out evaluation", ev),
        ("sources", "Per-source breakdown", per_source + ev_source or "<p class='skip'>No per-image metrics yet.</p>"),
        ("pseudo", "Pseudo-labels", _section_pseudo(run)),
        ("worst", f"Worst {n_worst} out-of-fold cases", _section_worst(run, tags, n_worst)),
    ]
    nav = "".join(f'<a href="#{sid}">{_esc(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{_esc(title)}</h2>{content}</section>' for sid, title, content in sections)
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>toothseg report: {_esc(run.root.name)}"
            f"</title><style>{CSS}</style></head><body><h1>toothseg report: {_esc(run.root.name)}</h1>"
            f"<p class='meta'>{_esc(run.root.resolve())} &middot; built {when}<br>{cfg_line}</p><nav>{nav}</nav>"
            f"{body}<p class='meta'>Metrics: docs/metrics.md (distances in pixels of the original image; OOF HD95 "
            f"as written by training).</p></body></html>")


def report(run: str | Path, out: str | Path | None = None, worst: int = 8, overwrite: bool = False) -> Path:
    """Build the HTML report of a run folder; returns its path (default RUN/reports/report.html)."""
    rd = open_run(run)
    if not any(p.exists() for p in (rd.samples, rd.train_dir, rd.reports_dir / "metrics.csv", rd.pseudo_dir)):
        raise ToothsegError(f"{rd.root}: nothing to report (no samples.csv, train/ or reports/metrics.csv); "
                            f"run 'toothseg prepare DATA... --out {rd.root}' first")
    if worst < 0:
        raise ToothsegError(f"--worst {worst}: must be 0 or more")
    if out is None:
        target = rd.reports_dir / "report.html"
    else:
        target = Path(out).expanduser()
        if target.is_dir() or target.suffix.lower() not in (".html", ".htm"):
            target = target / "report.html"
        if target.exists() and not overwrite:
            raise ToothsegError(f"{target}: already exists; pass --overwrite to replace it or choose another --out")
    atomic_write_text(target, build_html(rd, worst))
    log.info("report: %s (%.1f MB)", target, target.stat().st_size / 1e6)
    return target
