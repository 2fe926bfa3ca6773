#!/usr/bin/env bash
# Issue 27's figures: every method that can take the CVPR 2025 protocol (box, then 5
# fg/bg clicks; docs/cvpr25.md) on the hippocampus and left-atrium test splits and on every
# ACDC and BraTS target, one run per split and target:
#
#   bash benchmarks/cvpr25_figures.sh fast|medsam_lite|tta|extra|generalist|carried|val [DATA_ROOT] [OUT]
#
# fast         every method but the two slow ones, all test cases (results: OUT/<split>)
# extra        the generalist and the classical methods on every target of the three
#              datasets of ../shared/extra/build_extra.py (EXTRA, default
#              ~/.cache/mecca-data-extra): CHAOS MR and MS-CMRSeg all test cases, OpenKBP
#              the first MAX_CASES (default 8) of its 41; CHAOS and OpenKBP's larynx and
#              esophagus were held out of the generalist's training (unseen)
# generalist   the generalist alone on every split and target of fast and extra (results:
#              OUT/<split>_generalist), for when its weights or settings change: its rows
#              there replace its rows of the combined runs (benchmarks/cvpr25_table.py)
# carried      intercnn alone on every split of fast (results: OUT/<split>_intercnn): of
#              the methods of fast, the re-crop rule --recrop carry (since 2026-12-07)
#              changes only its rows and the generalist's (the methods that carry their
#              mask, docs/cvpr25.md); they replace those of fast
# val          model selection, never on test: the generalist alone (WEIGHTS=BUNDLE|RUN for
#              another model than the shipped one) on the val splits of the hippocampus,
#              left atrium, ACDC (3 targets) and CHAOS liver (unseen)
# medsam_lite  LiteMedSAM (its image encoder: ~2.7 s a slice on one thread), all cases of
#              ACDC and BraTS, then left atrium, then the hippocampus; MAX_CASES=N caps
#              the cases per split (the first N of the test split; the report says so)
# tta          the scribble test-time adaptation (~14 s a step), MAX_CASES as above
#
# Edge-only methods (mecca, edge_itermrl, generalist_mecca) are refused by the protocol
# (it gives fg/bg clicks they cannot take). The learned per-dataset models load their
# shipped default for the dataset: on ACDC and BraTS, where none was trained, that is the
# hippocampus model (the report's model column says which ran). Every run resumes
# (--resume): rerunning continues where a stopped one ended.
set -euo pipefail
which=${1:?usage: cvpr25_figures.sh fast|medsam_lite|tta|extra|generalist|carried|val [DATA_ROOT] [OUT]}
root=${2:-../shared/data}
out=${3:-runs/cvpr25}
jobs=${JOBS:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fast=generalist,itermrl,focal_itermrl,err_itermrl,pnet,unet,intercnn,deepigeos,partial,random_walker,graphcut,growcut,geos,region_growing
case $which in
  fast) methods=$fast; suffix="" ;;
  medsam_lite|tta) methods=$which; suffix="_$which" ;;
  extra) methods=generalist,growcut,geos,graphcut,random_walker; suffix="" ;;
  generalist) methods=generalist; suffix="_generalist" ;;
  carried) methods=intercnn; suffix="_intercnn" ;;
  val) methods=generalist; suffix="" ;;
  *) echo "unknown preset $which" >&2; exit 2 ;;
esac
cap=()
[[ -n "${MAX_CASES:-}" ]] && cap=(--max-cases "$MAX_CASES")
extra=${EXTRA:-$HOME/.cache/mecca-data-extra}
split=test
weights=()
if [[ $which == val ]]; then
  split=val
  [[ -n "${WEIGHTS:-}" ]] && weights=(--weights "generalist=$WEIGHTS")
fi
run() {  # dataset target folder
  local data="$root/$1"
  [[ $1 == /* ]] && data=$1
  local args=(--data "$data" --split "$split" --methods "$methods" --protocol cvpr25
    --jobs "$jobs" --no-progress --resume --out "$out/$3$suffix" "${cap[@]}" "${weights[@]}")
  [[ -n "$2" ]] && args+=(--target "$2")
  echo "== $(date -u +%H:%M:%S) $3$suffix"
  mecca benchmark "${args[@]}"
}
order=(hippocampus left_atrium acdc brats)
[[ $which == medsam_lite || $which == tta ]] && order=(acdc brats left_atrium hippocampus)
[[ $which == val ]] && order=(hippocampus left_atrium acdc chaos_liver)
[[ $which == generalist ]] && order=(hippocampus left_atrium acdc brats chaos cmr openkbp)
if [[ $which == extra || $which == generalist ]]; then
  [[ $which == extra ]] && order=(chaos cmr openkbp)
  [[ -z "${MAX_CASES:-}" ]] && MAX_CASES=8
fi
for d in "${order[@]}"; do
  case $d in
    hippocampus) run hippocampus "" hippocampus ;;
    left_atrium) run left_atrium "" left_atrium ;;
    acdc) for t in lv rv myocardium; do run acdc "$t" "acdc_$t"; done ;;
    brats) for t in whole_tumour tumour_core enhancing; do run brats2015 "$t" "brats_$t"; done ;;
    chaos) for t in liver right_kidney left_kidney; do run "$extra/chaos_mr" "$t" "chaos_$t"; done ;;
    chaos_liver) run "$extra/chaos_mr" liver chaos_liver ;;
    cmr) for t in lv rv myocardium; do run "$extra/cmr_mr" "$t" "cmr_$t"; done ;;
    openkbp)
      cap=(--max-cases "$MAX_CASES")
      for t in brainstem spinal_cord right_parotid left_parotid mandible larynx esophagus; do
        run "$extra/openkbp_ct" "$t" "openkbp_$t"
      done ;;
  esac
done
echo "== $(date -u +%H:%M:%S) done"
