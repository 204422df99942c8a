"""bench/label_efficiency.py: the test split, nested label fractions, symlinked scenarios, the paired-difference CI,
argument and WORK checks, the table/plot (fast); the whole benchmark on tiny synthetic data (slow)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from toothseg.data.layout import Sample, discover
from toothseg.data.synth import synth

_SPEC = importlib.util.spec_from_file_location(
    "label_efficiency", Path(__file__).resolve().parents[1] / "bench" / "label_efficiency.py")
le = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(le)

FRACTIONS = (0.1, 0.25, 0.5, 1.0)


@pytest.fixture()
def archive() -> tuple[list[Sample], dict, list[str]]:
    """50 labelled 't' images (a 3-copy group with an unlabelled copy, a pair), 'pool' images (one a copy of the
    pair, one with a mask of its own): (samples, curation items, eligible keys)."""
    samples = [Sample("t", f"i{n}", Path(f"/d/t/images/i{n}.png"), Path(f"/d/t/masks/i{n}.png")) for n in range(50)]
    samples += [Sample("t", "u0", Path("/d/t/unlabelled/u0.png")),
                Sample("pool", "p0", Path("/d/pool/unlabelled/p0.png")),
                Sample("pool", "p1", Path("/d/pool/images/p1.png"), Path("/d/pool/masks/p1.png"))]
    items = {s.key: {"group": None, "use": "train"} for s in samples}
    for k in ("t/i0", "t/i1", "t/i2", "t/u0"):
        items[k]["group"] = 1
    for k in ("t/i3", "t/i4", "pool/p0"):
        items[k]["group"] = 2
    items["t/i2"]["use"] = "label-from:t/i1"  # a curated copy: not scored, but kept out with its group
    eligible = [s.key for s in samples if s.source == "t" and s.labelled and items[s.key]["use"] == "train"]
    return samples, items, eligible


def _whole(keys: set[str], group: set[str]) -> bool:
    return group <= keys or not group & keys


def test_test_split_is_seeded_disjoint_and_keeps_groups_whole(archive) -> None:
    _, items, eligible = archive
    splits = [le.carve(eligible, items, 0.2, seed) for seed in range(20)]
    for test, rest in splits:
        assert not set(test) & set(rest) and sorted(test + rest) == sorted(eligible)
        assert 10 <= len(test) <= 11  # 20 % of 49, give or take one group
        assert _whole(set(test), {"t/i0", "t/i1"}) and _whole(set(test), {"t/i3", "t/i4"})
    assert le.carve(eligible, items, 0.2, 3) == splits[3]
    assert len({tuple(sorted(t)) for t, _ in splits}) > 15


def test_label_fractions_nest_and_keep_groups_whole(archive) -> None:
    _, items, eligible = archive
    _, rest = le.carve(eligible, items, 0.2, 0)
    kept = [set(le.kept_labels(rest, items, f)) for f in FRACTIONS]
    for small, large in zip(kept, kept[1:]):
        assert small < large
    for f, k in zip(FRACTIONS, kept):
        assert round(f * len(rest)) <= len(k) <= round(f * len(rest)) + 1
        assert k <= set(rest)
        assert _whole(k, {"t/i0", "t/i1"} & set(rest)) and _whole(k, {"t/i3", "t/i4"} & set(rest))
    assert kept[-1] == set(rest)


def test_scenarios_leave_out_the_test_split_and_every_copy_of_it(archive) -> None:
    samples, items, eligible = archive
    seed = next(s for s in range(100) if {"t/i0", "t/i3"} <= set(le.carve(eligible, items, 0.2, s)[0]))
    test, rest = le.carve(eligible, items, 0.2, seed)
    assert "t/i2" not in test  # a label-from copy is not scored ...
    for f in FRACTIONS:
        kept = le.kept_labels(rest, items, f)
        roles = le.scenario_roles(samples, items, test, kept, {"t"})
        # ... but never trains either, nor do the unlabelled copies of test images, in any source
        assert set(roles) == {s.key for s in samples} - set(test) - {"t/i2", "t/u0", "pool/p0"}
        assert {k for k, r in roles.items() if r == "labelled"} == set(kept)
        assert roles["pool/p1"] == "unlabelled"  # --unlabelled sources never bring masks
        hidden = set(rest) - set(kept)
        assert all(roles[k] == "unlabelled" for k in hidden)
    assert not set(rest) - set(le.kept_labels(rest, items, 1.0))  # f = 1.0: no hidden labelled image


def test_scenario_is_symlinks_in_the_dataset_layout(tmp_path: Path) -> None:
    synth(tmp_path / "src", labelled=6, unlabelled=2, height=64, width=128, duplicates=False)
    samples = discover([tmp_path / "src"]).samples
    lab = sorted(s.key for s in samples if s.labelled)
    roles = {s.key: "labelled" if s.key in lab[:3] else "unlabelled" for s in samples}
    del roles[lab[-1]]  # a test image: not linked
    dirs = le.link_scenario(roles, {s.key: s for s in samples}, tmp_path / "scen", ["src", "other"])
    assert dirs == [tmp_path / "scen" / "src"]
    files = [p for p in (tmp_path / "scen").rglob("*") if not p.is_dir()]
    assert files and all(p.is_symlink() and p.resolve().parent.parent == (tmp_path / "src").resolve()
                         for p in files)
    found = discover(dirs)
    assert {s.key: "labelled" if s.labelled else "unlabelled" for s in found.samples} == roles
    assert not [p for p in found.problems if p.level == "error"]


def _rows(values: list[float], keys: list[str] | None = None) -> list[dict]:
    keys = keys or [f"t/{i}" for i in range(len(values))]
    return [{"key": k, "dice": v, "iou": v / 2, "hd95": 10 * v} for k, v in zip(keys, values)]


def test_paired_difference_averages_folds_per_image_and_bootstraps_images() -> None:
    ref = {"0": _rows([0.5, 0.6, 0.7, 0.8]), "1": _rows([0.4, 0.4, 0.4, 0.4])}
    arm = {"0": _rows([0.6, 0.7, 0.8, 0.9]), "1": _rows([0.4, 0.4, 0.4, 0.4])[::-1]}  # paired by key, not order
    d = le.paired_difference(arm, ref, "dice", n_boot=500)
    assert d["mean"] == pytest.approx(0.05)
    assert d["ci95"] == pytest.approx([0.05, 0.05])  # every image gains the same
    assert d["per_fold"] == pytest.approx({"0": 0.1, "1": 0.0})
    assert d["n_images"] == 4
    assert le.paired_difference(arm, ref, "hd95", n_boot=500)["mean"] == pytest.approx(0.5)

    rng = np.random.default_rng(1)
    base = rng.uniform(0.6, 0.9, 400)
    gain = rng.normal(0.02, 0.05, 400)
    keys = [f"t/{i}" for i in range(400)]
    ref1 = {"0": _rows(list(base), keys)}
    d = le.paired_difference({"0": _rows(list(base + gain), keys)}, ref1, "dice", n_boot=4000, seed=7)
    se = gain.std() / np.sqrt(400)
    assert d["mean"] == pytest.approx(gain.mean())
    assert d["ci95"][0] == pytest.approx(gain.mean() - 1.96 * se, abs=0.3 * se)
    assert d["ci95"][1] == pytest.approx(gain.mean() + 1.96 * se, abs=0.3 * se)
    assert d["ci95"][0] > 0  # 0.02 at n = 400 is about 8 standard errors
    assert d == le.paired_difference({"0": _rows(list(base + gain), keys)}, ref1, "dice", n_boot=4000, seed=7)
    noise = le.paired_difference({"0": _rows(list(base + gain - gain.mean()), keys)}, ref1, "dice", n_boot=4000)
    assert noise["ci95"][0] < 0 < noise["ci95"][1]
    with pytest.raises(ValueError, match="fold"):
        le.paired_difference({"2": ref["0"]}, ref, "dice")


def _args(work: Path, *extra: str) -> list[str]:
    return ["--data", str(work.parent / "d"), "--work", str(work), "--schedules", "mix", "--reference", "mix",
            *extra]


@pytest.mark.parametrize("extra,message", [
    (["--schedules", "labelled,mix"], "teacher itself"),
    (["--schedules", "mix,co-training"], "'co-training' is not a schedule"),
    (["--reference", "pretrain"], "--reference pretrain"),
    (["--fractions", "0.1,1.5"], "--fractions"),
    (["--folds", "a"], "--folds"),
    (["--teacher-time", "10m"], "HH:MM:SS"),
])
def test_bad_arguments_are_refused_in_one_line(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit):
        le.main(_args(tmp_path / "w", *extra))
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_existing_work_needs_resume_with_the_same_settings(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "settings.json").write_text(json.dumps({"teacher_time": "00:01:00"}))
    with pytest.raises(SystemExit, match="already exists; pass --resume"):
        le.main(_args(work))
    with pytest.raises(SystemExit, match="--data was None"):
        le.main(_args(work, "--resume"))
    assert json.loads((work / "settings.json").read_text()) == {"teacher_time": "00:01:00"}  # left as it was


def _results() -> dict:
    fractions = {}
    for f, gain in (("0.1", 0.04), ("1", 0.01)):
        arms = {}
        for arm, shift in (("teacher", -0.02), ("labelled-continue", 0.0), ("mix", gain)):
            folds = {k: {"steps": 100, "train_minutes": 5.0, "scores": _rows([0.7 + shift + 0.01 * i + 0.01 * int(k)
                                                                              for i in range(5)])} for k in "01"}
            arms[arm] = {"tag": arm, "folds": folds, "mean": le.arm_means(folds)}
        ref = {k: v["scores"] for k, v in arms["labelled-continue"]["folds"].items()}
        vs = {a: {m: le.paired_difference({k: v["scores"] for k, v in arms[a]["folds"].items()}, ref, m, 200)
                  for m in le.METRICS} for a in ("teacher", "mix")}
        fractions[f] = {"n_labelled": 10 if f == "0.1" else 100, "reference": "labelled-continue", "arms": arms,
                        "vs_reference": vs}
    return {"fractions": fractions, "test_split": {"n_images": 5},
            "settings": {"data": ["/d/tufts"], "unlabelled": ["/d/pool"], "test_share": 0.2, "seed": 0,
                         "preset": "tiny", "set": [], "folds": [0, 1], "teacher_time": "00:10:00",
                         "extra_time": "00:05:00", "reference": "labelled-continue"},
            "machine": {"cpu": "Some CPU", "cores": 2, "cpu_flags": ["avx2"], "gpu": None, "torch": "2", "date": "d"}}


def test_table_only_remakes_table_and_plot_from_results(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "results.json").write_text(json.dumps(_results()))
    le.main(["--work", str(work), "--table-only", "--out", str(tmp_path / "out" / "le.md")])
    md = (tmp_path / "out" / "le.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| 10% (10)") or line.startswith("| 100% (100)")]
    assert len(rows) == 6
    assert "| 10% (10) | mix | 0.7650 | 0.3825 | 7.65 | +0.0400 [+0.0400, +0.0400] | +0.0400 +0.0400 |" in md
    assert "| 100% (100) | labelled-continue | 0.7250 | 0.3625 | 7.25 | ref | ref | ref | ref | 100 | 5.0 |" in md
    assert "Some CPU" in md and "00:05:00" in md
    assert (tmp_path / "out" / "le.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="results.json: not found"):
        le.main(["--work", str(tmp_path / "none"), "--table-only"])


def test_combine_makes_one_table_and_plot_from_runs_on_the_same_test_split(tmp_path: Path, capsys) -> None:
    full = _results()
    runs = []
    for n, fkey in enumerate(("1", "0.1")):  # one fraction per run, given out of order
        res = json.loads(json.dumps(full))
        res["fractions"] = {fkey: full["fractions"][fkey]}
        res["test_split"]["keys"] = ["t/0", "t/1"]
        res["machine"]["cpu"] = f"CPU {n}"
        runs.append(tmp_path / f"r{n}.json")
        runs[-1].write_text(json.dumps(res))
    out = tmp_path / "out" / "all.md"
    assert le.main(["--combine", *map(str, runs), "--out", str(out)]) == 0
    md = out.read_text()
    assert md.index("## 10% labels (`r1.json`)") < md.index("## 100% labels (`r0.json`)")
    assert "CPU 0" in md and "CPU 1" in md
    assert "| 10% (10) | mix | 0.7650 |" in md and "| 100% (100) | labelled-continue | 0.7250 |" in md
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    other = json.loads(runs[0].read_text())
    other["test_split"]["keys"] = ["t/0", "t/2"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other.json: scored another test split than"):
        le.main(["--combine", str(runs[1]), str(tmp_path / "other.json"), "--out", str(out)])
    with pytest.raises(SystemExit, match="the 100% fraction is also in"):
        le.main(["--combine", str(runs[0]), str(runs[0]), "--out", str(out)])
    with pytest.raises(SystemExit, match="missing.json: not found"):
        le.main(["--combine", str(tmp_path / "missing.json"), "--out", str(out)])
    with pytest.raises(SystemExit):
        le.main(["--combine", str(runs[0])])
    assert "--combine: give --out" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ end to end (tiny preset)
@pytest.mark.slow
def test_benchmark_end_to_end_on_tiny_synthetic_data(tmp_path: Path) -> None:
    synth(tmp_path / "synth", labelled=16, unlabelled=4, height=128, width=256, seed=0)  # with duplicate groups
    synth(tmp_path / "pool", labelled=0, unlabelled=4, height=128, width=256, seed=1, duplicates=False)
    work = tmp_path / "work"
    args = ["--data", str(tmp_path / "synth"), "--unlabelled", str(tmp_path / "pool"), "--work", str(work),
            "--fractions", "0.5", "--folds", "0,1", "--teacher-time", "00:01:00", "--extra-time", "00:00:40",
            "--preset", "tiny", "--schedules", "mix,pretrain-mix", "--reference", "mix", "--bootstrap", "500",
            "--set", "curate.n_folds=2", "train.threads=1", "train.max_steps=4", "train.epochs=1",
            "pseudo.select=all"]
    assert le.main(args) == 0

    split = json.loads((work / "test_split.json").read_text())
    test_paths = {str((tmp_path / "synth" / "images" / f"{k.split('/')[1]}.png").resolve()) for k in split["left_out"]}
    linked = [p for p in (work / "f0.5" / "data").rglob("*.png")]
    assert linked and all(p.is_symlink() for p in linked)
    assert not {str(p.resolve()) for p in linked} & test_paths
    samples = (work / "f0.5" / "run" / "samples.csv").read_text()
    assert not [k for k in split["left_out"] if f"{k}," in samples]

    res = json.loads((work / "results.json").read_text())
    fr = res["fractions"]["0.5"]
    assert list(fr["arms"]) == ["teacher", "mix", "pretrain-mix"] and set(fr["vs_reference"]) == {"teacher",
                                                                                                 "pretrain-mix"}
    for arm in fr["arms"].values():
        assert set(arm["folds"]) == {"0", "1"}
        for fold in arm["folds"].values():
            assert [r["key"] for r in fold["scores"]] == split["keys"] and fold["steps"] > 0
    for vs in fr["vs_reference"].values():
        assert vs["dice"]["ci95"][0] <= vs["dice"]["mean"] <= vs["dice"]["ci95"][1]
    assert res["machine"]["torch"] and res["test_split"]["n_images"] == len(split["keys"]) >= 2
    md = (work / "label_efficiency.md").read_text()
    assert "| 50% (" in md and (work / "label_efficiency.png").is_file()

    with pytest.raises(SystemExit, match="--resume"):
        le.main(args)
    ckpts = {p: p.stat().st_mtime for p in work.rglob("*.ckpt")}
    assert le.main(args + ["--resume"]) == 0  # every piece reused: nothing retrained, same scores
    assert {p: p.stat().st_mtime for p in work.rglob("*.ckpt")} == ckpts
    again = json.loads((work / "results.json").read_text())["fractions"]["0.5"]
    assert {a: v["folds"] for a, v in again["arms"].items()} == {a: v["folds"] for a, v in fr["arms"].items()}
    resumed_md = (work / "label_efficiency.md").read_text()
    os.remove(work / "label_efficiency.md")
    le.main(["--work", str(work), "--table-only"])
    assert (work / "label_efficiency.md").read_text() == resumed_md
