#!/usr/bin/env bash
# The val figures behind the default method and the session's ROI margin (docs/defaults.md,
# docs/user-guide.md): the generalist, GeoS and GrowCut, val splits only.
#
#   bash benchmarks/default_choice.sh [DATA_ROOT] [OUT]     (MARGINS=20,40,60 to compare)
#
# points: benchmarks/points_only.py (3 fg then 3 bg points, no box) on 8 targets;
# cvpr25: mecca benchmark --protocol cvpr25 on the 5 unseen targets (CHAOS, OpenKBP).
# Needs ~/.cache/mecca-data-extra (../shared/extra/build_extra.py; EXTRA to change it).
set -euo pipefail
root=${1:-../shared/data}
out=${2:-runs/default_choice}
extra=${EXTRA:-$HOME/.cache/mecca-data-extra}
margins=${MARGINS:-40}
methods=generalist,geos,growcut
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$out"
points() {  # name data [--target T]
  local name=$1 data=$2; shift 2
  python benchmarks/points_only.py --data "$data" --split val --max-cases 8 \
    --methods "$methods" --margins "$margins" --out "$out/points_${name}_val.json" "$@"
}
points hippocampus "$root/hippocampus"
points left_atrium "$root/left_atrium"
points acdc_lv "$root/acdc" --target lv
for t in liver right_kidney left_kidney; do points "chaos_$t" "$extra/chaos_mr" --target $t; done
for t in larynx esophagus; do points "openkbp_$t" "$extra/openkbp_ct" --target $t; done
for t in liver right_kidney left_kidney; do
  mecca benchmark --data "$extra/chaos_mr" --split val --target $t --methods $methods \
    --protocol cvpr25 --no-progress --out "$out/cvpr25_chaos_${t}_val"
done
for t in larynx esophagus; do
  mecca benchmark --data "$extra/openkbp_ct" --split val --target $t --methods $methods \
    --protocol cvpr25 --no-progress --out "$out/cvpr25_openkbp_${t}_val"
done
