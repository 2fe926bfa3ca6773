#!/usr/bin/env bash
# The papers' ablation studies on the shared data (docs/ablations.md), one preset each:
#
#   bash benchmarks/ablations.sh rewards|absolute|guided|users|labeled|steps [DATA_ROOT]
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
#          control). Results: docs/ablations.md
# steps    IteR-MRL Table 7: T = 1 (600 episodes, validated over 5 steps)
#
# Training runs resume where they stopped (--resume); a finished benchmark is not rerun.
# Everything lands in runs/; one thread per process (OMP_NUM_THREADS=1) on a 2-core CPU.
set -euo pipefail
study=${1:?usage: ablations.sh rewards|absolute|guided|users|labeled|steps [DATA_ROOT]}
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
  for percent in 12.5 25 50; do
    fraction=$(python -c "print($percent / 100)")
    run="mecca_hippocampus_lf${percent/./}"
    settings=(--set labeled_fraction="$fraction" --set lr_decay_episode=300)
    [ -f "runs/${run}_labeled/last.pt" ] || {  # the shared warm-up, then a copy per branch
      train "${run}_warm" configs/mecca_hippocampus.yaml "${settings[@]}" \
        --set unlabeled_from=300 --set episodes=300
      for branch in semi held labeled; do cp -rn "runs/${run}_warm" "runs/${run}_$branch"; done
    }
    train "${run}_semi" configs/mecca_hippocampus.yaml "${settings[@]}" --set unlabeled_from=300
    train "${run}_held" configs/mecca_hippocampus.yaml "${settings[@]}" --set unlabeled_from=300 \
      --set simulated_labels=episode
    train "${run}_labeled" configs/mecca_hippocampus.yaml "${settings[@]}" \
      --set unlabeled_from=1000000
    curves+=(--run "${percent}%+unlabeled-per-step=runs/${run}_semi"
      --run "${percent}%+unlabeled-held=runs/${run}_held" --run "${percent}%=runs/${run}_labeled")
  done
  mecca curves "${curves[@]}" --upto 600 --out runs/curves_labeled
  ;;
steps)
  train itermrl_hippocampus_t1 configs/itermrl_hippocampus.yaml --set steps=1 --set val_steps=5
  mecca curves --run T5=runs/itermrl_hippocampus --run T1=runs/itermrl_hippocampus_t1 \
    --upto 600 --out runs/curves_steps
  ;;
*)
  echo "unknown study $study: rewards, absolute, guided, users, labeled or steps" >&2
  exit 2
  ;;
esac
