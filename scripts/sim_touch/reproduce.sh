#!/bin/bash
# Reproduce the shipped checkpoint checkpoints/sim_touch (its README.md is the model card): demonstrations,
# dataset, the training runs, the evaluation table. Every stage is resumable: rerun the script after an
# interruption and it goes on where it stopped (finished stages are skipped).
#
#   scripts/sim_touch/reproduce.sh [STAGE...]
# Stages, by default all in this order: collect dataset train-standard train-flash train-long eval-baselines
# eval-standard eval-flash eval-long table ship. Training runs: run_standard (3,000 steps from scratch on
# demonstrations from the ready pose: the shipped model) and run_flash (the same with decoupled noise) give the
# 1-Euler-step comparison; run_long, an experiment that did worse in closed loop (model card), continues
# run_standard for 6,000 steps. Evaluations may run beside training, but two torch processes on 2 cores slow each
# other down many times over (OpenMP threads): run training stages alone.
# Environment: WORK (default runs/sim_touch), NICE (default 10). Needs `make setup` (the dreamzero command).
# On a 2-core CPU: about 25 min for the collection, 45 min (run_standard), 15 min (run_flash) and 27 min (run_long)
# of training, and 40 s per evaluation episode.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-runs/sim_touch}
NICE=${NICE:-10}
export PATH="$PWD/.venv/bin:$PATH" AMENT_PREFIX_PATH="$PWD/.venv" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-77} ROS_LOG_DIR=${ROS_LOG_DIR:-/tmp/sim_touch-roslog}
TASKS=(--task "Touch the red cube." --task "Touch the blue cube.")
EPISODES=200   # demonstrations: training seeds 0..199
EVAL_EPISODES=20  # per row, evaluation seeds from 1,000,000 on (never a training scene)
TRAIN=(--init tiny_sim --no-augment --cache-encodings --start-stride 3 --steps 3000 --batch-size 16 --micro-batch 16 --vae-steps 60
       --workers 1 --save-every 100 --val-every 200 --keep-checkpoints 2)
mkdir -p "$WORK"

collect() {  # the demonstrations: 10 episodes per batch, a finished batch is marked done; two collectors at once
  # (even and odd batches, their own ROS domains): each waits on its render process half the time
  for worker in 0 1; do
    (
      export ROS_DOMAIN_ID=$((ROS_DOMAIN_ID + 1 + worker))
      for ((s = 10 * worker; s < EPISODES; s += 20)); do
        out="$WORK/demos/batch_$(printf %04d $s)"
        [ -f "$out/done" ] && continue
        rm -rf "$out"
        nice -n "$NICE" dreamzero collect --episodes 10 --seed-start $s "${TASKS[@]}" -o "$out" --camera-rate 5 \
          --render-processes 1 --timeout 20 && touch "$out/done"
      done
    ) &
  done
  wait
  [ "$(ls "$WORK"/demos/batch_*/done | wc -l)" -eq $((EPISODES / 10)) ]  # every batch done
}

dataset() {
  [ -f "$WORK/ds/meta/info.json" ] && return
  nice -n "$NICE" dreamzero dataset "$WORK"/demos/batch_*/episode_*/bag -o "$WORK/ds" --only-success --quiet
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

train_long() {  # the experiment: run_standard's model trained on with a second cosine cycle (its encoders and encodings)
  local run="$WORK/run_long"
  if [ ! -d "$run" ]; then
    mkdir -p "$run"
    ln -s ../run_standard/encodings "$run/encodings"
  fi
  nice -n "$NICE" dreamzero train "$WORK/ds" --output "$run" --init "$WORK/run_standard" --no-augment \
    --cache-encodings --start-stride 3 --steps 6000 --batch-size 16 --micro-batch 16 --lr 5e-4 --workers 1 \
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

evaluate_standard() {  # the shipped model (run_standard): standard sampler, prompt swapped, 1 Euler step
  local standard="$WORK/run_standard"
  eval_row standard --checkpoint "$standard" "${TASKS[@]}" --episodes $EVAL_EPISODES
  # the next 20 evaluation seeds: in the first 20 the task's cube is the one nearer the robot in 16 (model card)
  eval_row standard_next --checkpoint "$standard" "${TASKS[@]}" --episodes $EVAL_EPISODES \
    --seed-start $((1000000 + EVAL_EPISODES))
  # prompt swapped to the other cube: 10 scenes of each task
  eval_row swap_red_to_blue --checkpoint "$standard" --task "Touch the red cube." \
    --prompt-override "Touch the blue cube." --episodes $((EVAL_EPISODES / 2))
  eval_row swap_blue_to_red --checkpoint "$standard" --task "Touch the blue cube." \
    --prompt-override "Touch the red cube." --episodes $((EVAL_EPISODES / 2)) --seed-start $((1000000 + EVAL_EPISODES / 2))
  eval_row standard_euler1 --checkpoint "$standard" "${TASKS[@]}" --episodes $EVAL_EPISODES --sampler flash --steps 1
}

evaluate_flash() {
  eval_row flash_euler1 --checkpoint "$WORK/run_flash" "${TASKS[@]}" --episodes $EVAL_EPISODES --sampler flash --steps 1
}

evaluate_long() {  # the experiment
  eval_row long_standard --checkpoint "$WORK/run_long" "${TASKS[@]}" --episodes $EVAL_EPISODES
}

table() {
  python scripts/sim_touch/table.py "$WORK/eval" | tee "$WORK/eval/table.md"
}

ship() {  # the shipped run's model and records, its dataset's meta/ and the golden chunk into the repository
  local run="$WORK/run_standard" shipped=checkpoints/sim_touch  # its README.md, the model card, is written by hand
  mkdir -p "$shipped/dataset_meta"
  cp -r "$run"/{config.json,experiment_cfg,model.safetensors,tokenizer,loss.png,metrics.jsonl,train_summary.json} \
    "$shipped/"
  cp "$WORK"/ds/meta/{info.json,modality.json,relative_stats_dreamzero.json,stats.json,tasks.jsonl} \
    "$shipped/dataset_meta/"
  python scripts/sim_touch/golden.py "$shipped" tests/data/sim_touch_golden.npz
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(collect dataset train-standard train-flash train-long eval-baselines eval-standard
                                    eval-flash eval-long table ship)
for stage in "${stages[@]}"; do
  case "$stage" in
    collect) collect ;;
    dataset) dataset ;;
    train-standard) train run_standard ;;
    train-flash) train_flash ;;
    train-long) train_long ;;
    eval-baselines) evaluate_baselines ;;
    eval-standard) evaluate_standard ;;
    eval-flash) evaluate_flash ;;
    eval-long) evaluate_long ;;
    table) table ;;
    ship) ship ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
