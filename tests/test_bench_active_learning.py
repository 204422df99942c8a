"""bench/active_learning.py's splits: a test split of whole duplicate groups, arms that differ only by their picks."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "active_learning", Path(__file__).resolve().parents[1] / "bench" / "active_learning.py")
al = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(al)


@pytest.fixture()
def full(tmp_path: Path) -> Path:
    """A prepared run (as `toothseg prepare` writes it) of 40 labelled images, 2 folds, copies in groups 1 and 2."""
    run = tmp_path / "full"
    run.mkdir()
    keys = [f"d/x{i}" for i in range(40)]
    with (run / "samples.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "source", "image_id", "image_path", "mask_path"])
        for k in keys:
            iid = k.split("/")[1]
            w.writerow([k, "d", iid, f"/data/images/{iid}.png", f"/data/masks/{iid}.png"])
        w.writerow(["d/u0", "d", "u0", "/data/unlabelled/u0.png", ""])
    items = {k: {"group": None, "use": "train"} for k in keys}
    for k in ("d/x0", "d/x1", "d/x2"):
        items[k]["group"] = 1
    for k in ("d/x3", "d/x4"):
        items[k]["group"] = 2
    items["d/x5"]["use"] = "drop"
    items["d/u0"] = {"group": 2, "use": "label-from:d/x3"}
    (run / "curation.json").write_text(json.dumps({"summary": {}, "items": items}))
    usable = [k for k in keys if k != "d/x5"]
    folds = {"0": {"train": usable[1::2], "val": usable[0::2]}, "1": {"train": usable[0::2], "val": usable[1::2]}}
    (run / "folds.json").write_text(json.dumps(folds))
    (run / "config.yaml").write_text("seed: 42\n")
    return run


def test_test_split_takes_whole_groups_and_excludes_their_copies(full: Path, tmp_path: Path) -> None:
    items = json.loads((full / "curation.json").read_text())["items"]
    for seed in range(6):
        work = tmp_path / f"w{seed}"
        split = al.carve_test(full, work, 0.25, seed)
        test = set(split["test"])
        assert 9 <= len(test) <= 12 and "d/x5" not in test
        for g in (1, 2):
            members = {k for k, v in items.items() if v["group"] == g and v["use"] == "train" and k != "d/u0"}
            assert members <= test or not members & test  # a group is never split
        if "d/x3" in test:
            assert "d/u0" in split["excluded_copies_of_test"]
        assert len(list((work / "test" / "images").iterdir())) == len(test)
        assert (work / "test" / "masks" / f"{sorted(test)[0].split('/')[1]}.png").is_symlink()
    assert al.carve_test(full, tmp_path / "w0", 0.5, 99) == json.loads((tmp_path / "w0" / "split.json").read_text())


def test_arms_share_validation_and_differ_only_by_picks(full: Path, tmp_path: Path) -> None:
    labelled = {f"d/x{i}" for i in range(10, 20)}
    pool = {f"d/x{i}" for i in range(20, 40)}
    picks = {"a": {"d/x20", "d/x21"}, "b": {"d/x30", "d/x31"}}
    for arm, chosen in picks.items():
        al.write_run(full, tmp_path / arm, labelled, chosen, pool - chosen)
    fa = json.loads((tmp_path / "a" / "folds.json").read_text())
    fb = json.loads((tmp_path / "b" / "folds.json").read_text())
    for k in fa:
        assert fa[k]["val"] == fb[k]["val"] and set(fa[k]["val"]) <= labelled
        assert set(fa[k]["train"]) - set(fb[k]["train"]) == picks["a"]
        assert set(fb[k]["train"]) - set(fa[k]["train"]) == picks["b"]
    with (tmp_path / "a" / "samples.csv").open() as f:
        rows = {r["key"]: r for r in csv.DictReader(f)}
    assert rows["d/x20"]["mask_path"] and not rows["d/x25"]["mask_path"]  # picks keep real masks; pool hidden
    assert "d/x0" not in rows  # neither labelled nor pool: not in the scenario


def test_paired_comparison() -> None:
    a = {f"k{i}": 0.8 + 0.01 * (i % 3) for i in range(30)}
    b = {f"k{i}": 0.8 for i in range(30)}
    r = al.paired(a, b)
    assert r["n"] == 30 and r["mean_diff"] == pytest.approx(0.01) and r["images_better"] == 20
    assert r["ci95"][0] > 0 and r["wilcoxon_p"] < 0.01
    assert al.paired(b, b)["wilcoxon_p"] == 1.0


def test_refuses_a_used_work_folder(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "x").write_text("")
    with pytest.raises(SystemExit, match="--resume"):
        al.main(["--data", str(tmp_path), "--work", str(tmp_path / "w")])


def test_strategy_option_reaches_the_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        al.main(["--data", str(tmp_path), "--work", str(tmp_path / "w"), "--strategy", "outliers"])
    assert "typical" in capsys.readouterr().err
    seed = {"seed": 0, "labelled": 6, "pool": 30, "test_dice": {"base": 0.7, "random": 0.75, "suggest": 0.76},
            "suggest_vs_random": {"mean_diff": 0.01, "ci95": [0.0, 0.02], "images_better": 3, "images_worse": 1,
                                  "wilcoxon_p": 0.2}}
    res = {"args": {"n": 5, "strategy": "typical", "data": "d", "label_fraction": 0.1, "preset": "tiny",
                    "max_time": None, "train_folds": ["0"], "set": []},
           "split": {"n_test": 4}, "cpu": "x", "seeds": [seed], "argv": "--strategy typical",
           "summary": {"seeds": 1, "mean_diff": 0.01, "seeds_better": 1}}
    assert "`suggest --strategy typical --n 5`" in al.table(res)


def _seed(seed: int, diff: float, per_image: dict | None = None) -> dict:
    r = {"seed": seed, "labelled": 6, "pool": 30, "test_dice": {"base": 0.7, "random": 0.75, "suggest": 0.75 + diff},
         "suggest_vs_random": {"mean_diff": diff, "ci95": [diff - 0.01, diff + 0.01], "images_better": 3,
                               "images_worse": 1, "wilcoxon_p": 0.2}}
    return {**r, "per_image": per_image} if per_image else r


def test_seeds_are_summarised_over_seeds_and_per_image() -> None:
    imgs = {f"k{i}": 0.8 for i in range(10)}
    up = {k: v + 0.02 for k, v in imgs.items()}
    results = [_seed(0, 0.01), _seed(1, 0.02, {"random": imgs, "suggest": up, "base": imgs}),
               _seed(2, 0.03, {"random": imgs, "suggest": {k: v + 0.04 for k, v in imgs.items()}, "base": imgs})]
    s = al.summarise(results)
    half = 4.302653 * 0.01 / 3 ** 0.5  # t(0.975, 2 df) x SD / sqrt(n)
    assert s["seeds"] == 3 and s["mean_diff"] == pytest.approx(0.02) and s["seeds_better"] == 3
    assert s["ci95_over_seeds"] == pytest.approx([0.02 - half, 0.02 + half], abs=1e-5)
    assert s["per_image"]["seeds"] == 2 and s["per_image"]["mean_diff"] == pytest.approx(0.03)
    assert s["per_image"]["images_better"] == 10


def test_previous_results_are_pooled_only_with_the_same_settings(tmp_path: Path) -> None:
    args = argparse.Namespace(data=Path("/x/tufts"), preset="cpu", max_time="00:30:00", set=["train.max_steps=200"],
                              n=50, strategy="typical", label_fraction=0.1, test_fraction=0.2, folds=5,
                              train_folds=["0"], retrain="scratch")
    old = {"args": {**{k: v for k, v in vars(args).items() if k != "retrain"}, "data": "/elsewhere/tufts"},
           "cpu": "Old CPU",
           "split": {"n_test": 149}, "seeds": [_seed(0, 0.01), _seed(1, -0.01)]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    test = [f"t/{i}" for i in range(149)]
    got = al.earlier_seeds([path], args, test, [2, 3])
    assert [r["seed"] for r in got] == [0, 1] and {r["cpu"] for r in got} == {"Old CPU"}
    assert {r["from"] for r in got} == {"old.json"}
    with pytest.raises(SystemExit, match="seed 1 is given twice"):
        al.earlier_seeds([path], args, test, [1, 2])
    with pytest.raises(SystemExit, match="another test split"):
        al.earlier_seeds([path], args, test + ["t/extra"], [2])
    # a result that records its split's fingerprint is pooled only with the same keys, even at the same size
    path.write_text(json.dumps({**old, "split": {"n_test": 149, "test_digest": al.split_digest(test)}}))
    assert len(al.earlier_seeds([path], args, list(reversed(test)), [2])) == 2
    with pytest.raises(SystemExit, match="another test split"):
        al.earlier_seeds([path], args, test[:-1] + ["t/other"], [2])
    path.write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="another strategy"):
        al.earlier_seeds([path], argparse.Namespace(**{**vars(args), "strategy": "uncertain"}), test, [2])
    with pytest.raises(SystemExit, match="another data"):
        al.earlier_seeds([path], argparse.Namespace(**{**vars(args), "data": Path("/x/ufba425")}), test, [2])
    with pytest.raises(SystemExit, match="missing.json: not found"):
        al.earlier_seeds([tmp_path / "missing.json"], args, test, [2])
    # results written before --retrain existed were retrained from scratch: pooled with scratch, never with warm
    warm = argparse.Namespace(**{**vars(args), "retrain": "warm"})
    with pytest.raises(SystemExit, match="another retrain \\('scratch'\\)"):
        al.earlier_seeds([path], warm, test, [2])


def _metrics(run: Path, rows: list[tuple[str, float, int, int]]) -> None:
    ev = run / "test_eval"
    ev.mkdir(parents=True)
    (ev / "summary.json").write_text("{}")
    with (ev / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "status", "dice", "gt_px", "pred_px"])
        w.writerows([(k, "ok", d, g, q) for k, d, g, q in rows] + [("bad", "error", "", "", "")])


def test_score_names_edentulous_images_and_empty_predictions(tmp_path: Path) -> None:
    _metrics(tmp_path, [("a", 0.9, 100, 90), ("e1", 1.0, 0, 0), ("e2", 0.0, 0, 12)])
    s = al.score(tmp_path, tmp_path / "test", 1, tmp_path / "log")  # summary.json present: nothing is run
    assert s["dice"] == {"a": 0.9, "e1": 1.0, "e2": 0.0} and s["mean_dice"] == pytest.approx(1.9 / 3)
    assert s["empty_gt"] == ["e1", "e2"] and s["empty_pred"] == ["e1"]


def test_edentulous_images_are_summarised_apart() -> None:
    imgs = {f"k{i}": 0.8 for i in range(10)}
    flips = {**imgs, "e": 0.0}  # suggest wins 0.02 on every image with teeth but loses the edentulous one
    res = []
    for seed in (0, 1):
        r = _seed(seed, -0.07, {"random": {**imgs, "e": 1.0}, "suggest": {**{k: v + 0.02 for k, v in imgs.items()},
                                                                            "e": 0.0}, "base": flips})
        r["empty_gt"] = ["e"]
        r["empty_right"] = {"base": 0, "random": 1, "suggest": 0}
        r["suggest_vs_random_teeth"] = al.paired({k: v + 0.02 for k, v in imgs.items()}, imgs)
        res.append(r)
    s = al.summarise(res)
    assert s["mean_diff"] == pytest.approx(-0.07) and s["seeds_better"] == 0
    assert s["teeth"]["mean_diff"] == pytest.approx(0.02) and s["teeth"]["seeds_better"] == 2
    assert s["teeth"]["edentulous"] == 1 and s["teeth"]["edentulous_right"] == {"base": 0, "random": 2, "suggest": 0}
    assert s["per_image"]["images_worse"] == 1 and s["per_image_teeth"]["n"] == 10
    assert s["per_image_teeth"]["images_better"] == 10
    text = al.table({"args": {"n": 5, "strategy": "typical", "data": "d", "label_fraction": 0.1, "preset": "cpu",
                              "max_time": None, "train_folds": ["0"], "set": [], "retrain": "warm"},
                     "split": {"n_test": 11}, "cpu": "x", "seeds": res, "argv": "", "summary": s})
    assert "retrained from the base model" in text and "| 0 / 1 / 0 of 1 |" in text
    assert "Images with teeth, over the 2 seed(s) that record them: +0.0200" in text
    assert "random 2, suggest 0 of 2" in text



def test_continue_arm_measures_what_the_labels_add_beyond_the_steps(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        al.main(["--data", str(tmp_path), "--work", str(tmp_path / "w"), "--continue-arm"])
    assert "--continue-arm needs --retrain warm" in capsys.readouterr().err
    res = []
    for seed, gain in ((0, 0.01), (1, 0.03)):
        r = _seed(seed, 0.0)
        r["random_vs_continue"] = {"mean_diff": gain}
        r["suggest_vs_continue"] = {"mean_diff": gain + 0.01}
        res.append(r)
    res.append(_seed(2, 0.0))  # a seed run without the arm is left out of that figure
    s = al.summarise(res)
    assert s["vs_continue"]["random"]["seeds"] == 2 and s["vs_continue"]["random"]["mean_diff"] == pytest.approx(0.02)
    assert s["vs_continue"]["suggest"]["mean_diff"] == pytest.approx(0.03)
    text = al.table({"args": {"n": 50, "strategy": "typical", "data": "d", "label_fraction": 0.1, "preset": "cpu",
                              "max_time": None, "train_folds": ["0"], "set": [], "retrain": "warm"},
                     "split": {"n_test": 11}, "cpu": "x", "seeds": res, "argv": "", "summary": s})
    assert "What the 50 labels add over the base fine-tuned as long on its own labels (`continue`), over 2 seed(s): " \
        "random +0.0200" in text and "(per seed +0.0100, +0.0300)" in text


def _fakes() -> tuple:
    """A fake `toothseg` (train leaves a finished fold, suggest a worklist) and a fake scorer, with their call logs."""
    calls: list[tuple[str, ...]] = []

    def fake_toothseg(*args, log: Path) -> None:
        calls.append(tuple(map(str, args)))
        run = Path(args[1])
        if args[0] == "train":
            fold = run / "train" / "unet-x" / f"fold{args[3]}"
            fold.mkdir(parents=True, exist_ok=True)
            (fold / "oof.csv").write_text("")
            (run / "bundle").mkdir(exist_ok=True)
            (run / "bundle" / "bundle.json").write_text(json.dumps({"threshold": 0.45, "postprocess": {
                "min_component": 64, "fill_holes": False}}))
        elif args[0] == "suggest":  # typical: the last 3 of the pool; uncertain: the first 3
            pool = sorted(k for k in json.loads((run.parent / "plan.json").read_text())["pool"])
            keys = pool[-3:] if args[args.index("--strategy") + 1] == "typical" else pool[:3]
            (run / "suggest").mkdir(parents=True, exist_ok=True)
            (run / "suggest" / "worklist.json").write_text(json.dumps({"items": [{"key": k} for k in keys],
                                                                       "skipped": []}))

    scored: list[tuple[str, str]] = []

    def fake_score(run: Path, test: Path, threads: int, log: Path, name: str = "test", extra: tuple = ()) -> dict:
        scored.append((run.name, name, *extra))
        if name.startswith("pool"):  # every linked pool image, as `evaluate` scores it; odd-numbered ones have no teeth
            ids = sorted(p.stem for p in (test / "images").iterdir())
            dice = {i: 0.5 + (0.1 if "suggest" in run.name else 0.0) for i in ids}
            gt = [i for i in ids if int(i[1:]) % 2]
            return {"mean_dice": 0.5, "dice": dice, "empty_gt": gt,
                    "empty_pred": gt if run.name.startswith("random") else []}
        fixed = -0.03 if extra else 0.0  # through the base's post-processing the suggest arm is behind
        dice = {f"t{i}": 0.8 + 0.01 * i + (0.02 + fixed if "suggest" in run.name else 0.0) for i in range(3)}
        return {"mean_dice": sum(dice.values()) / 3, "dice": dice, "empty_gt": [], "empty_pred": []}

    return fake_toothseg, fake_score, calls, scored


def _faked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **settings) -> tuple:
    """The bench's verbs and scorer faked; returns (args for run_seed with ``settings``, split, calls, scored)."""
    fake_toothseg, fake_score, calls, scored = _fakes()
    monkeypatch.setattr(al, "toothseg", fake_toothseg)
    monkeypatch.setattr(al, "score", fake_score)
    split = {"test": ["d/x0", "d/x1", "d/x2"], "excluded_copies_of_test": []}
    args = argparse.Namespace(**{"work": tmp_path / "w", "label_fraction": 0.3, "train_folds": ["0"], "n": 3,
                                 "threads": 1, "retrain": "warm", "continue_arm": True, "strategy": "typical",
                                 "pool_eval": 0, "base_postprocess": False, **settings})
    return args, split, calls, scored


def test_a_second_strategy_shares_base_random_and_continue(full: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    args, split, calls, scored = _faked(monkeypatch, tmp_path)
    first = al.run_seed(args, full, split, 0, tmp_path / "test", ["--preset", "tiny"])
    trained = [c[1] for c in calls if c[0] == "train"]
    assert [Path(t).name for t in trained] == ["base", "suggest-warm", "random-warm", "continue-warm"]
    assert all(c[c.index("--init-from") + 1] == str(args.work / "seed0" / "base")
               for c in calls if c[0] == "train" and Path(c[1]).name != "base")
    calls.clear()
    args.strategy = "uncertain"
    second = al.run_seed(args, full, split, 0, tmp_path / "test", ["--preset", "tiny"])
    assert [Path(c[1]).name for c in calls if c[0] == "train"] == ["suggest-uncertain-warm"]  # the rest is reused
    seed_dir = args.work / "seed0"
    typical, uncertain = (json.loads((seed_dir / f).read_text()) for f in ("picks.json", "picks-uncertain.json"))
    assert typical["random"] == uncertain["random"] and typical["suggest"] != uncertain["suggest"]
    assert first["test_dice"]["random"] == second["test_dice"]["random"]
    assert "heldout" not in first and all(name == "test" for _, name, *_ in scored)
    assert (seed_dir / "result-warm.json").is_file() and (seed_dir / "result-uncertain-warm.json").is_file()
    # random picks that no longer match cannot share the random arm
    (seed_dir / "picks.json").write_text(json.dumps({**typical, "random": typical["random"][:-1]}))
    with pytest.raises(SystemExit, match="picks.json: its random picks differ from picks-uncertain.json's"):
        al.run_seed(args, full, split, 0, tmp_path / "test", ["--preset", "tiny"])


def test_a_held_out_pool_sample_is_scored_without_the_picks_or_their_copies(full: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    items = json.loads((full / "curation.json").read_text())["items"]
    assert al.unseen({"d/x0": "x0", "d/x2": "x2", "d/x9": "x9"}, {"d/x1"}, items) == {"x9"}  # x0, x2: x1's copies
    args, split, calls, scored = _faked(monkeypatch, tmp_path, pool_eval=12)
    r = al.run_seed(args, full, split, 0, tmp_path / "test", ["--preset", "tiny"])
    seed_dir = args.work / "seed0"
    sample = json.loads((seed_dir / "pool_heldout.json").read_text())["images"]
    plan = json.loads((seed_dir / "plan.json").read_text())
    picks = json.loads((seed_dir / "picks.json").read_text())
    assert len(sample) == 12 and set(sample) <= set(plan["pool"])
    assert sorted(p.name for p in (seed_dir / "pool_heldout" / "masks").iterdir()) == sorted(
        f"{i}.png" for i in sample.values())
    held = r["heldout"]
    expect = al.unseen(sample, set(picks["suggest"]) | set(picks["random"]), items)
    assert held["sampled"] == 12 and held["n"] == len(expect) and set(held["per_image"]["random"]) == expect
    assert {("suggest-warm", "pool"), ("random-warm", "pool"), ("continue-warm", "pool")} <= set(scored)
    assert "base_postprocess" not in r
    assert held["suggest_vs_random"]["mean_diff"] == pytest.approx(0.1)
    assert held["suggest_vs_random"]["images_better"] == len(expect)
    s = al.summarise([r])
    assert s["heldout"]["mean_diff"] == pytest.approx(0.1) and s["heldout"]["images"] == [len(expect)]
    assert s["heldout"]["vs_continue"]["suggest"]["mean_diff"] == pytest.approx(0.1)
    empty = sorted(i for i in expect if int(i[1:]) % 2)
    assert held["empty_gt"] == empty and held["empty_right"] == {"suggest": 0, "random": len(empty), "continue": 0}
    assert held["suggest_vs_random_teeth"]["n"] == len(expect) - len(empty)
    text = al.pool_text({"seeds": [r], "summary": s})
    assert text.startswith("**Held-out pool sample** (12 pool images per seed") and "suggest better in 1" in text
    # resumed: the same sample, nothing drawn again
    (seed_dir / "pool_heldout.json").write_text(json.dumps({"images": dict(list(sample.items())[:5])}))
    assert al.run_seed(args, full, split, 0, tmp_path / "test", ["--preset", "tiny"])["heldout"]["sampled"] == 5


def test_base_postprocess_scores_both_arms_through_the_base_bundles_settings(full: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    args, split, calls, scored = _faked(monkeypatch, tmp_path, continue_arm=False, strategy="spread", pool_eval=10,
                                        base_postprocess=True)
    r = al.run_seed(args, full, split, 0, tmp_path / "test", ["--preset", "tiny"])
    flags = ("--threshold", "0.45", "--min-component", "64", "--no-fill-holes")
    assert r["base_postprocess"]["predict_options"] == list(flags)
    assert {("suggest-spread-warm", "test_basepp", *flags), ("random-warm", "test_basepp", *flags),
            ("suggest-spread-warm", "pool_basepp", *flags), ("random-warm", "pool_basepp", *flags)} <= set(scored)
    assert r["suggest_vs_random"]["mean_diff"] == pytest.approx(0.02)  # each arm's own post-processing
    assert r["base_postprocess"]["test"]["mean_diff"] == pytest.approx(-0.01)
    assert r["base_postprocess"]["heldout"]["n"] == r["heldout"]["n"]  # the same unseen pool images
    s = al.summarise([r, {**r, "seed": 1}])
    assert s["base_postprocess"]["test"]["mean_diff"] == pytest.approx(-0.01)
    assert set(s["base_postprocess"]) == {"test", "test_teeth", "heldout", "heldout_teeth"}
    text = al.table({"args": {"n": 3, "strategy": "spread", "data": "d", "label_fraction": 0.3, "preset": "tiny",
                              "max_time": None, "train_folds": ["0"], "set": [], "retrain": "warm"},
                     "split": {"n_test": 3}, "cpu": "x", "seeds": [r, {**r, "seed": 1}], "argv": "", "summary": s})
    assert "**With the base bundle's threshold and post-processing for both arms** (over 2 seed(s)): suggest - " \
        "random test -0.0100" in text
