#!/usr/bin/env bash
# The page's box tool on val splits: the generalist with the object's bounding box (grown
# by SLACK of its size per side) drawn first, as the ROI only or as a box prompt, then 3
# foreground and 3 background points (benchmarks/points_only.py); docs/server.md quotes it.
#
#   bash benchmarks/page_box_val.sh [DATA_ROOT] [OUT]
#       (SLACKS="0 0.25", BOXES=roi,prompt, WEIGHTS=RUN for another generalist, EXTRA=...)
#
# 11 targets: hippocampus, left atrium, ACDC LV / RV / myocardium and, when the extra
# datasets are built (EXTRA, default ~/.cache/mecca-data-extra), CHAOS liver and kidneys,
# OpenKBP larynx, esophagus and spinal cord (the first 8 cases of the hippocampus and
# OpenKBP val splits). A result file that exists is kept (rerun to resume).
set -euo pipefail
root=${1:-../shared/data}
out=${2:-runs/box_val}
extra=${EXTRA:-$HOME/.cache/mecca-data-extra}
export PATH=$PWD/.venv/bin:$PATH OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$out"
rows=("$root/hippocampus - 8" "$root/left_atrium - -" "$root/acdc lv -" "$root/acdc rv -"
  "$root/acdc myocardium -")
if [[ -d $extra/chaos_mr ]]; then
  rows+=("$extra/chaos_mr liver -" "$extra/chaos_mr right_kidney -" "$extra/chaos_mr left_kidney -"
    "$extra/openkbp_ct larynx 8" "$extra/openkbp_ct esophagus 8" "$extra/openkbp_ct spinal_cord 8")
fi
for slack in ${SLACKS:-0 0.25}; do
  for row in "${rows[@]}"; do
    read -r data target cap <<< "$row"
    name=$(basename "$data")
    [[ $target != - ]] && name+="_$target"
    file=$out/${name}_slack$slack.json
    [[ -f $file ]] && continue
    args=(--data "$data" --split val --methods generalist --margins 40
      --boxes "${BOXES:-roi,prompt}" --box-slack "$slack" --out "$file")
    [[ -n ${WEIGHTS:-} ]] && args+=(--weights "$WEIGHTS")
    [[ $target != - ]] && args+=(--target "$target")
    [[ $cap != - ]] && args+=(--max-cases "$cap")
    echo "== $(date -u +%H:%M:%S) $name slack $slack"
    python benchmarks/points_only.py "${args[@]}" | { grep -v "passed over" || true; }
  done
done
