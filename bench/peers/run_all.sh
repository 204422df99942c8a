#!/usr/bin/env bash
# Equal-budget comparison (issue 9): every system trains on fold 0 of ONE prepared tufts run for BUDGET minutes of
# wall clock on this machine, one after another (never two at once on 2 cores), and is scored by `toothseg evaluate`
# on fold 0's validation images and on all of ufba425 (trained on tufts only). Everything derived from the licensed
# data stays under $W (default /tmp/bench). Steps can be run alone: bench/peers/run_all.sh STEP [STEP...]
#   prepare nnunet toothseg smp ssl table      (default: all, in this order)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
W=${W:-/tmp/bench}
RUN=${RUN:-$W/run}              # the one prepared run (folds.json / splits_final.json) every system uses
BUDGET_MIN=${BUDGET_MIN:-30}
HMS=$(printf '%02d:%02d:00' $((BUDGET_MIN / 60)) $((BUDGET_MIN % 60)))
HALF=$(printf '%02d:%02d:00' $((BUDGET_MIN / 2 / 60)) $((BUDGET_MIN / 2 % 60)))
EVAL=$W/evalsets/fold0
UFBA=$W/evalsets/ufba425        # every 3rd ufba425 image (109 of 325, every category): nnU-Net's TTA costs seconds each
SETS=(--set "val-tufts=$EVAL/tufts" --set "cross-ufba425=$UFBA")
STEPS=("$@"); [ ${#STEPS[@]} -eq 0 ] && STEPS=(prepare nnunet toothseg smp ssl table)
say() { echo "== $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg): $*"; }

for step in "${STEPS[@]}"; do case $step in
prepare)
  say prepare
  [ -f "$RUN/folds.json" ] || toothseg prepare "$DATA/tufts" --out "$RUN" --preset cpu
  python3 bench/peers/eval_set.py "$RUN" --fold 0 --out "$EVAL"
  python3 bench/peers/subset.py "$DATA/ufba425" --every 3 --out "$UFBA" ;;
nnunet)
  say "nnU-Net v2 2d, $HMS"
  [ -x /tmp/nnunet-venv/bin/nnUNetv2_train ] || bench/peers/nnunet_setup.sh /tmp/nnunet-venv
  python3 bench/peers/nnunet_run.py "$RUN" --work "$W/nnunet" --budget "$HMS" --cross "$UFBA" --cross-modes tta ;;
toothseg)
  say "toothseg cpu preset, $HMS"
  [ -f "$RUN/bundle/bundle.json" ] || toothseg train "$RUN" --fold 0 --preset cpu --max-time "$HMS"
  # default inference: the bundle's hflip TTA, OOF-tuned threshold and post-processing, PyTorch
  python3 bench/peers/system_run.py --name toothseg-cpu --work "$W/systems" "${SETS[@]}" \
    -- toothseg predict "$RUN/bundle" {images} --out {out} --no-overlay
  [ -d "$RUN/bundle/onnx" ] || toothseg export "$RUN/bundle" --format onnx
  # fastest: ONNX Runtime, no TTA (same threshold and post-processing)
  python3 bench/peers/system_run.py --name toothseg-cpu-fastest --work "$W/systems" "${SETS[@]}" \
    -- toothseg predict "$RUN/bundle" {images} --out {out} --no-overlay --no-tta --engine onnxruntime ;;
smp)
  say "plain smp U-Net, $BUDGET_MIN min"
  [ -f "$W/smp/model.pt" ] || python3 bench/baseline_smp_unet.py --run "$RUN" --fold 0 --minutes "$BUDGET_MIN" \
    --out "$W/smp/baseline.json"
  python3 bench/peers/system_run.py --name smp-unet --work "$W/systems" "${SETS[@]}" \
    -- python3 bench/baseline_smp_unet.py --weights "$W/smp/model.pt" --out {out}/../predict.json \
       --predict {images}:{out} ;;
ssl)
  # 25 % of fold 0's training labels; the rest of tufts' training images and mlua_caries are unlabelled. Teacher
  # (labelled only) and pretrain-then-mix student get half the budget each, so the schedule's training totals BUDGET.
  say "toothseg semi-supervised, 25 % labels, 2 x $HALF"
  [ -f "$W/ssl/full/folds.json" ] || toothseg prepare "$DATA/tufts" "$DATA/mlua_caries" --out "$W/ssl/full" --preset cpu
  python3 bench/peers/same_split.py "$RUN" "$W/ssl/full" --fold 0   # scored on the same images, none trained on
  python3 bench/ssl_ablation.py --data "$DATA/tufts" --unlabelled "$DATA/mlua_caries" --fraction 0.25 \
    --full-val-fold 0 --folds 0 --rows labelled,pretrain-mix --work "$W/ssl" --preset cpu --max-time "$HALF" \
    --table bench/peers/ssl_l25_fold0.md --reuse-prepare
  # the bundle `toothseg run` would ship: teacher and student fused with OOF-tuned weights
  [ -f "$W/ssl/scenario/bundle/bundle.json" ] || \
    python3 -c "import sys; from toothseg.predict.bundle import build_bundle; build_bundle(sys.argv[1])" "$W/ssl/scenario"
  python3 bench/peers/system_run.py --name toothseg-ssl-l25 --work "$W/systems" "${SETS[@]}" \
    -- toothseg predict "$W/ssl/scenario/bundle" {images} --out {out} --no-overlay ;;
table)
  python3 bench/peers/system_run.py --work "$W/systems" --nnunet "$W/nnunet/results.json" --table "$W/table.md" ;;
*) echo "unknown step $step" >&2; exit 2 ;;
esac; done
say done
