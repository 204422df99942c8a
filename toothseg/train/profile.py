"""`--profile`: where a training run's time went, as a few lines and ``profile.json`` in the model folder."""

from __future__ import annotations

from typing import Any

from toothseg.train.phases import PhaseTimes

PHASES = ("data", "compute", "val", "ckpt")


def profile_summary(phases: PhaseTimes, seconds: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Throughput and the split of ``seconds`` (the whole fit) into data loading, compute (forward, backward,
    optimizer), validation, checkpoint writes and the rest (start-up, logging)."""
    s = phases.summary()
    minutes = max(seconds, 1e-9) / 60
    split = {k: s[f"{k}_s"] for k in PHASES}
    split["other"] = round(max(0.0, seconds - sum(split.values())), 3)
    out = {"seconds": round(seconds, 2), "steps": s["steps"], "batches": s["batches"], "images": s["images"],
           "steps_per_min": round(s["steps"] / minutes, 2), "images_per_s": round(s["images"] / max(seconds, 1e-9), 3),
           "seconds_by_phase": split,
           "share_by_phase": {k: round(v / max(seconds, 1e-9), 4) for k, v in split.items()}}
    out.update(extra or {})
    return out


def profile_lines(p: dict[str, Any]) -> list[str]:
    share = p["share_by_phase"]
    secs = p["seconds_by_phase"]
    lines = [f"{p['steps']} steps, {p['images']} images in {p['seconds']:.0f} s: {p['steps_per_min']:.1f} steps/min, "
             f"{p['images_per_s']:.2f} images/s"]
    lines.append("time: " + ", ".join(f"{k} {secs[k]:.0f} s ({100 * share[k]:.0f}%)" for k in (*PHASES, "other")))
    if p.get("precision"):
        lines.append(f"precision {p['precision']}, channels_last {p.get('channels_last')}, "
                     f"workers {p.get('num_workers')}, cache {p.get('cache')}")
    if p.get("budget"):
        b = p["budget"]
        lines.append(f"budget: {b['used_s']:.0f} of {b['budget_s']:.0f} s used ({100 * (b['used_share'] or 0):.1f}%), "
                     f"{b['steps']} of {b['planned_steps']} planned steps")
    return lines
