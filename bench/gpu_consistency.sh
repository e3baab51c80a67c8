#!/usr/bin/env bash
# Issue 11 on a GPU: supervised vs `consistency` (and jigsaw λ 0.5, the best paper task at
# the medium budget) at a larger budget than the CPU's medium preset, 3 seeds each, all
# trainings at once on the one GPU (one process each; the tiles are read on the CPU, so one
# process alone leaves the GPU mostly idle). Then, on the quiet GPU, bench/gpu_check.py
# (throughput ratios, `consistency` vs a bare smp step included).
#
#   bench/gpu_consistency.sh DATA OUT [SECONDS]
#
# DATA = the dubai folder, OUT = where ssl.md / ssl.tar.gz / gpu_check.* go, SECONDS = the
# whole script's wall-clock budget (default 560: the device tool's 10-minute limit). The
# budget of a training is set by EPOCHS / SAMPLES (default 24 × 384 tiles = 2304 steps of
# 4 + 4 128-px tiles, 6× the medium preset); a training not done by its deadline is killed
# and missing from the table. TASKS picks the rows (ARGS below), CHECK=0 skips gpu_check.
# DEVICE=cpu EPOCHS=1 SAMPLES=8 VAL_PARTS=1 SEEDS=0 runs the same script at toy size on a CPU
# (a smoke test of the script).
set -u
DATA=$1 OUT=$2 BUDGET=${3:-560}
DEVICE=${DEVICE:-cuda} EPOCHS=${EPOCHS:-24} SAMPLES=${SAMPLES:-384} VAL_PARTS=${VAL_PARTS:-1-9}
SEEDS=${SEEDS:-0 1 2} TASKS=${TASKS:-supervised consistency jigsaw}
START=$(date +%s)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
mkdir -p "$OUT" "$WORK/logs" .build/plugins
[ -e .build/plugins/berunda ] || ln -s "$PWD" .build/plugins/berunda   # once, not per process
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1

common=(--preset medium --data "$DATA" --device "$DEVICE" --epochs "$EPOCHS" --samples "$SAMPLES"
        --unlabeled-parts 2-9 --val-parts "$VAL_PARTS" --val-crop 0 --lr-schedule poly --seeds 1)
# TASKS names rows of this table; the first is the baseline of the gains.
declare -A ARGS=([supervised]="--tasks" [consistency]="--no-baseline --tasks consistency --lambdas 1"
                 [jigsaw]="--no-baseline --tasks jigsaw --lambdas 0.5"
                 [supervised_wce]="--tasks --supervised-loss weighted_ce"
                 [consistency_wce]="--no-baseline --tasks consistency --lambdas 1 --supervised-loss weighted_ce")
CHECK=${CHECK:-1}      # 0: no gpu_check afterwards, the trainings get the whole budget
train_deadline=$(( CHECK ? BUDGET * 70 / 100 : BUDGET - 30 ))
for seed in $SEEDS; do
    for task in $TASKS; do
        # shellcheck disable=SC2086
        timeout "$train_deadline" "$PY" bench/paper.py "${common[@]}" --first-seed "$seed" \
            ${ARGS[$task]} --out "$WORK/$task-s$seed" >"$WORK/logs/$task-s$seed.log" 2>&1 &
    done
done
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 20 >"$WORK/logs/smi.csv" &
    SMI=$!
fi
wait $(jobs -p | grep -v "^${SMI:-x}$")
[ -n "${SMI:-}" ] && kill "$SMI"
echo "trainings done after $(( $(date +%s) - START )) s"

groups=()
for task in $TASKS; do
    dirs=$(for seed in $SEEDS; do printf '%s,' "$WORK/$task-s$seed"; done)
    groups+=("$task=${dirs%,}")
done
{
    echo "bench/gpu_consistency.sh: ${EPOCHS} epochs × ${SAMPLES} tiles, unlabeled parts 2-9, "
    echo "validation parts ${VAL_PARTS} of scenes 7-8 (whole rasters), poly lr, seeds ${SEEDS}"
    echo
    "$PY" bench/collect.py --baseline "${TASKS%% *}" --history confident_share "${groups[@]}"
} | tee "$OUT/ssl.md"
tar -czf "$OUT/ssl.tar.gz" -C "$WORK" --exclude='*.tif' --exclude='*.pt' --exclude='*.html' .

left=$(( BUDGET - ($(date +%s) - START) - 15 ))
if [ "$left" -gt 60 ] && [ "$DEVICE" = cuda ] && [ "$CHECK" = 1 ]; then
    timeout "$left" "$PY" bench/gpu_check.py --out "$OUT"
else
    echo "gpu_check skipped: ${left} s left"
fi
echo "done after $(( $(date +%s) - START )) s"
