#!/usr/bin/env bash
# The papers' ablation studies on the shared data (docs/ablations.md), one preset each:
#
#   bash benchmarks/ablations.sh rewards|absolute|guided|users|labeled|uamt|steps [DATA_ROOT]
#
# rewards  MECCA Fig. 9: Focal-/Err-IteR-MRL trained 600 episodes, curves beside the MECCA
#          and IteR-MRL runs (runs/mecca_hippocampus, runs/itermrl_hippocampus), test benchmark
# absolute IteR-MRL Table 5: the absolute reward (-cross-entropy after the step) instead of
#          the relative gain, 600 episodes, curves beside runs/itermrl_hippocampus
# guided   MECCA Table 5: the user clicks only inside the advice regions (both datasets)
# users    IteR-MRL Table 6: error-centre / random / no clicks from the P-Net's map
# labeled  MECCA Table 3: labeled fraction 12.5 / 25 / 50 % on the hippocampus: a 300-episode
#          warm-up on the labeled volumes (lr 1e-3), then three branches to 600 at lr 1e-4:
#          "semi" (unlabeled batches join, Algorithm 1, Eq. 10 labels per step), "held"
#          (the same, labels held per episode) and "labeled" (labeled volumes only, the
#          control). Results: docs/ablations.md. BRANCHES="held labeled" runs only those
#          branches (the per-step "semi" branch collapses: docs/ablations.md), PERCENTS="25"
#          only that fraction
# uamt     MECCA Table 3's non-interactive rows: the U-Net on the labeled share only and UA-MT
#          (U-Net student and teacher, the unlabeled rest too), 1500 steps each, at 12.5 / 25
#          / 50 % (PERCENTS="25" picks), then both on the test split
# steps    IteR-MRL Table 7: T = 1 (600 episodes, validated over 5 steps)
#
# Training runs resume where they stopped (--resume); a finished benchmark is not rerun.
# Everything lands in runs/; one thread per process (OMP_NUM_THREADS=1) on a 2-core CPU.
set -euo pipefail
study=${1:?usage: ablations.sh rewards|absolute|guided|users|labeled|uamt|steps [DATA_ROOT]}
root=${2:-../shared/data}
export OMP_NUM_THREADS=1
hippo="$root/hippocampus"

train() {  # train NAME CONFIG [--set ...]: a 600-episode run in runs/NAME, resumed if there
  local name=$1 config=$2
  shift 2
  local resume=()
  [ -f "runs/$name/last.pt" ] && resume=(--resume)
  mecca train --config "$config" --data "$hippo" --out "runs/$name" --set episodes=600 \
    "$@" "${resume[@]}" --no-progress
}

bench() {  # bench OUT DATA ARGS...: the test split, 5 steps, seed 0, two worker processes
  local out=$1 data=$2
  shift 2
  [ -f "runs/$out/results.json" ] && return 0
  mecca benchmark --data "$data" --split test --steps 5 --seed 0 --jobs 2 --no-progress \
    --out "runs/$out" "$@"
}

case $study in
rewards)
  for variant in focal err; do
    train "${variant}_itermrl_hippocampus" "configs/${variant}_itermrl_hippocampus.yaml"
  done
  mecca curves --run MECCA=runs/mecca_hippocampus --run IteR-MRL=runs/itermrl_hippocampus \
    --run Focal-IteR-MRL=runs/focal_itermrl_hippocampus \
    --run Err-IteR-MRL=runs/err_itermrl_hippocampus --upto 600 --out runs/curves_rewards
  for variant in focal err; do  # the runs' best checkpoints as bundles, for --weights
    mecca export-model "runs/${variant}_itermrl_hippocampus" --force \
      --out "runs/${variant}_itermrl_hippocampus_bundle"
  done
  bench bench_hippocampus_rewards "$hippo" --protocol mecca \
    --methods focal_itermrl,err_itermrl,itermrl,mecca \
    --weights focal_itermrl=runs/focal_itermrl_hippocampus_bundle \
    --weights err_itermrl=runs/err_itermrl_hippocampus_bundle
  ;;
absolute)
  train itermrl_hippocampus_absolute configs/itermrl_hippocampus.yaml --set reward=absolute
  runs=(--run absolute=runs/itermrl_hippocampus_absolute)
  [ -d runs/itermrl_hippocampus ] && runs=(--run relative=runs/itermrl_hippocampus "${runs[@]}")
  mecca curves "${runs[@]}" --upto 600 --out runs/curves_absolute
  ;;
guided)
  for ds in hippocampus left_atrium; do
    bench "bench_${ds}_guided" "$root/$ds" --protocol mecca_guided --methods mecca
  done
  ;;
users)
  for protocol in itermrl itermrl_random itermrl_none; do
    bench "bench_hippocampus_$protocol" "$hippo" --protocol "$protocol" \
      --methods itermrl,pnet --initial pnet_hippocampus
  done
  ;;
labeled)
  curves=()
  for percent in ${PERCENTS:-12.5 25 50}; do
    fraction=$(python -c "print($percent / 100)")
    run="mecca_hippocampus_lf${percent/./}"
    settings=(--set labeled_fraction="$fraction" --set lr_decay_episode=300)
    for branch in ${BRANCHES:-semi held labeled}; do
      [ -d "runs/${run}_$branch" ] || {  # the shared warm-up, then a copy per branch
        train "${run}_warm" configs/mecca_hippocampus.yaml "${settings[@]}" \
          --set unlabeled_from=300 --set episodes=300
        cp -r "runs/${run}_warm" "runs/${run}_$branch"
      }
      case $branch in
      semi) extra=(--set unlabeled_from=300) label="${percent}%+unlabeled-per-step" ;;
      held) extra=(--set unlabeled_from=300 --set simulated_labels=episode)
        label="${percent}%+unlabeled-held" ;;
      labeled) extra=(--set unlabeled_from=1000000) label="${percent}%" ;;
      *) echo "unknown branch $branch: semi, held or labeled" >&2 && exit 2 ;;
      esac
      train "${run}_$branch" configs/mecca_hippocampus.yaml "${settings[@]}" "${extra[@]}"
      curves+=(--run "$label=runs/${run}_$branch")
    done
  done
  mecca curves "${curves[@]}" --upto 600 --out runs/curves_labeled
  ;;
uamt)
  for percent in ${PERCENTS:-12.5 25 50}; do
    fraction=$(python -c "print($percent / 100)")
    for method in unet uamt; do
      run="runs/${method}_hippocampus_lf${percent/./}"
      resume=()
      [ -f "$run/last.pt" ] && resume=(--resume)
      mecca train --config "configs/${method}_hippocampus.yaml" --data "$hippo" --out "$run" \
        --labeled-fraction "$fraction" "${resume[@]}" --no-progress
    done
    bench "bench_hippocampus_uamt_lf${percent/./}" "$hippo" --protocol mecca --methods unet,uamt \
      --weights "unet=runs/unet_hippocampus_lf${percent/./}" \
      --weights "uamt=runs/uamt_hippocampus_lf${percent/./}"
  done
  ;;
steps)
  train itermrl_hippocampus_t1 configs/itermrl_hippocampus.yaml --set steps=1 --set val_steps=5
  mecca curves --run T5=runs/itermrl_hippocampus --run T1=runs/itermrl_hippocampus_t1 \
    --upto 600 --out runs/curves_steps
  ;;
*)
  echo "unknown study $study: rewards, absolute, guided, users, labeled, uamt or steps" >&2
  exit 2
  ;;
esac
