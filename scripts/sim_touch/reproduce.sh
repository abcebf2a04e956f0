#!/bin/bash
# Reproduce the shipped checkpoint checkpoints/sim_touch (its README.md is the model card): demonstrations,
# dataset, the training runs, the evaluation table. Every stage is resumable: rerun the script after an
# interruption and it goes on where it stopped (finished stages are skipped).
#
#   scripts/sim_touch/reproduce.sh [STAGE...]
# Stages, by default all in this order: collect dataset train-standard train-flash train-long collect-mix
# dataset-mix train-mix eval-baselines eval-standard eval-flash table ship. Training runs: run_standard (3,000
# steps from scratch on demonstrations from the ready pose) and run_flash (the same with decoupled noise) give
# the 1-Euler-step comparison; run_long continues run_standard for 6,000 steps: the shipped model. run_mix, an
# experiment that did not help (model card), continues run_long on new scenes whose demonstrations start from a
# random pose in half the episodes and hold at the cube. Evaluations may run beside training, but two torch processes on 2 cores slow each other down
# many times over (OpenMP threads): run training stages alone.
# Environment: WORK (default runs/sim_touch), NICE (default 10). Needs `make setup` (the dreamzero command).
# On a 2-core CPU: about 25 min per collection, 45 min (run_standard), 15 min (run_flash), 25 min (run_long) and
# 40 min (run_mix) of training, and 40 s per evaluation episode.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-runs/sim_touch}
NICE=${NICE:-10}
export PATH="$PWD/.venv/bin:$PATH" AMENT_PREFIX_PATH="$PWD/.venv" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-77} ROS_LOG_DIR=${ROS_LOG_DIR:-/tmp/sim_touch-roslog}
TASKS=(--task "Touch the red cube." --task "Touch the blue cube.")
EPISODES=200   # demonstrations per collection: training seeds 0..199, then 200..399 (collect-mix)
EVAL_EPISODES=20  # per row, evaluation seeds from 1,000,000 on (never a training scene)
TRAIN=(--init tiny_sim --no-augment --cache-encodings --start-stride 3 --steps 3000 --batch-size 16 --micro-batch 16 --vae-steps 60
       --workers 1 --save-every 100 --val-every 200 --keep-checkpoints 2)
mkdir -p "$WORK"

collect() {  # collect NAME FIRST_SEED [OPTION...]: 10 episodes per batch, a finished batch is marked done; two
  # collectors at once (even and odd batches, their own ROS domains): each waits on its render process half the time
  local name=$1 first=$2; shift 2
  for worker in 0 1; do
    (
      export ROS_DOMAIN_ID=$((ROS_DOMAIN_ID + 1 + worker))
      for ((s = first + 10 * worker; s < first + EPISODES; s += 20)); do
        out="$WORK/$name/batch_$(printf %04d $s)"
        [ -f "$out/done" ] && continue
        rm -rf "$out"
        nice -n "$NICE" dreamzero collect --episodes 10 --seed-start $s "${TASKS[@]}" -o "$out" --camera-rate 5 \
          --render-processes 1 --timeout 20 "$@" && touch "$out/done"
      done
    ) &
  done
  wait
  [ "$(ls "$WORK/$name"/batch_*/done | wc -l)" -eq $((EPISODES / 10)) ]  # every batch done
}

dataset() {  # dataset DEMOS DS
  [ -f "$WORK/$2/meta/info.json" ] && return
  nice -n "$NICE" dreamzero dataset "$WORK/$1"/batch_*/episode_*/bag -o "$WORK/$2" --only-success --quiet
}

train() {  # train RUN [--flash]: resumes a started run
  local run="$WORK/$1"; shift
  local resume=(); [ -d "$run" ] && resume=(--resume)
  nice -n "$NICE" dreamzero train "$WORK/ds" --output "$run" "${TRAIN[@]}" "$@" "${resume[@]}" --quiet
}

train_flash() {  # the Flash run shares the standard run's VAE stage and encodings: same frozen encoders, same data
  local run="$WORK/run_flash"
  if [ ! -d "$run" ]; then
    mkdir -p "$run"
    cp -r "$WORK/run_standard/vae_stage" "$run/vae_stage"
    ln -s ../run_standard/encodings "$run/encodings"
  fi
  train run_flash --flash
}

train_long() {  # run_standard's model trained on with a second cosine cycle (its encoders, so its encodings)
  local run="$WORK/run_long"
  if [ ! -d "$run" ]; then
    mkdir -p "$run"
    ln -s ../run_standard/encodings "$run/encodings"
  fi
  nice -n "$NICE" dreamzero train "$WORK/ds" --output "$run" --init "$WORK/run_standard" --no-augment \
    --cache-encodings --start-stride 3 --steps 6000 --batch-size 16 --micro-batch 16 --lr 5e-4 --workers 1 \
    --save-every 200 --val-every 500 --keep-checkpoints 2 --resume --quiet
}

train_mix() {  # the experiment: run_long's model trained on with the mixed-start demonstrations (new clips, encodings)
  nice -n "$NICE" dreamzero train "$WORK/ds_mix" --output "$WORK/run_mix" --init "$WORK/run_long" --no-augment \
    --cache-encodings --start-stride 3 --steps 4000 --batch-size 16 --micro-batch 16 --lr 5e-4 --workers 1 \
    --save-every 200 --val-every 500 --keep-checkpoints 2 --resume --quiet
}

eval_row() {  # eval_row NAME ARGS...: one evaluation folder (skipped when complete)
  local out="$WORK/eval/$1"; shift
  if [ -f "$out/summary.json" ] && grep -q '"complete": true' "$out/summary.json"; then return; fi
  rm -rf "$out"
  nice -n "$NICE" dreamzero eval-sim -o "$out" --timeout 15 --render-processes 1 "$@"
}

evaluate_baselines() {  # needs no trained model
  eval_row demonstrator --checkpoint demonstrator "${TASKS[@]}" --episodes $EVAL_EPISODES
  eval_row random_tiny --checkpoint tiny "${TASKS[@]}" --episodes $EVAL_EPISODES
}

evaluate_standard() {  # the shipped model (run_long); the 1-step row on run_standard, trained as long as run_flash
  local standard="$WORK/run_long"
  eval_row standard --checkpoint "$standard" "${TASKS[@]}" --episodes $EVAL_EPISODES
  # prompt swapped to the other cube: 10 scenes of each task
  eval_row swap_red_to_blue --checkpoint "$standard" --task "Touch the red cube." \
    --prompt-override "Touch the blue cube." --episodes $((EVAL_EPISODES / 2))
  eval_row swap_blue_to_red --checkpoint "$standard" --task "Touch the blue cube." \
    --prompt-override "Touch the red cube." --episodes $((EVAL_EPISODES / 2)) --seed-start $((1000000 + EVAL_EPISODES / 2))
  eval_row standard_euler1 --checkpoint "$WORK/run_standard" "${TASKS[@]}" --episodes $EVAL_EPISODES --sampler flash \
    --steps 1
  eval_row phase1_standard --checkpoint "$WORK/run_standard" "${TASKS[@]}" --episodes $EVAL_EPISODES  # its sampler's share
  eval_row mix_standard --checkpoint "$WORK/run_mix" "${TASKS[@]}" --episodes $EVAL_EPISODES  # the experiment
}

evaluate_flash() {
  eval_row flash_euler1 --checkpoint "$WORK/run_flash" "${TASKS[@]}" --episodes $EVAL_EPISODES --sampler flash --steps 1
}

table() {
  python scripts/sim_touch/table.py "$WORK/eval" | tee "$WORK/eval/table.md"
}

ship() {  # the shipped run's model and records, its dataset's meta/ and the golden chunk into the repository
  local run="$WORK/run_long" shipped=checkpoints/sim_touch  # its README.md, the model card, is written by hand
  mkdir -p "$shipped/dataset_meta"
  cp -r "$run"/{config.json,experiment_cfg,model.safetensors,tokenizer,loss.png,metrics.jsonl,train_summary.json} \
    "$shipped/"
  cp "$WORK"/ds/meta/{info.json,modality.json,relative_stats_dreamzero.json,stats.json,tasks.jsonl} \
    "$shipped/dataset_meta/"
  python scripts/sim_touch/golden.py "$shipped" tests/data/sim_touch_golden.npz
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(collect dataset train-standard train-flash train-long collect-mix dataset-mix train-mix
                                    eval-baselines eval-standard eval-flash table ship)
for stage in "${stages[@]}"; do
  case "$stage" in
    collect) collect demos 0 ;;
    dataset) dataset demos ds ;;
    train-standard) train run_standard ;;
    train-flash) train_flash ;;
    train-long) train_long ;;
    collect-mix) collect demos_mix $EPISODES --random-start 0.5 --hold 1.0 ;;
    dataset-mix) dataset demos_mix ds_mix ;;
    train-mix) train_mix ;;
    eval-baselines) evaluate_baselines ;;
    eval-standard) evaluate_standard ;;
    eval-flash) evaluate_flash ;;
    table) table ;;
    ship) ship ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
