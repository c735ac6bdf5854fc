#!/usr/bin/env bash
# Ensemble members trained side by side on a lent GPU machine, in one call of the device tool.
#
#   bash scripts/gpu_members.sh --data .gpu/fer2013.zip --minutes 8 --out "$OUT" \
#       seed3:3 erasing:4:training/configs/member-erasing.toml
#
# Each MEMBER is NAME:SEED[:CONFIG]: `python -m training train --seed SEED [--config CONFIG]` into
# its own run directory, on Keras over JAX, all of them at once on the one GPU (none takes all of
# its memory). A member whose trimmed state is committed in training/carried/NAME (or
# $CARRIED_DIR/NAME) goes on from it with --resume; so does one whose earlier call ran out of time.
#
# The machine is bare and lent for minutes, so nothing is left on it: every member is stopped
# (SIGINT, which ends it at its last finished epoch) when --minutes have passed, and leaves one
# file in --out, its log inside:
#   NAME.run.tar.gz      finished: the run without its checkpoint, to export and evaluate here
#                        (training/README.md, "On a GPU machine");
#   NAME.carried.tar.gz  not finished: its trimmed state (training.carry), to commit in
#                        training/carried/NAME and resume on the next GPU or here.
# The device tool brings back at most 8 files of 16 MiB, hence at most 8 members.
#
# Wheels the machine lacks (Keras and what it needs beyond JAX) are installed from .gpu/wheels
# when that folder exists; training/README.md says how to fill it and .gpu/ with the data.
set -euo pipefail

usage() {
    echo "usage: $0 --data ZIP --minutes M --out DIR NAME:SEED[:CONFIG] ..." >&2
    exit 2
}

data="" minutes="" out=""
members=()
while (($#)); do
    case "$1" in
        --data) data="$2"; shift 2 ;;
        --minutes) minutes="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -*) usage ;;
        *) members+=("$1"); shift ;;
    esac
done
[[ -n "$data" && -n "$minutes" && -n "$out" && ${#members[@]} -gt 0 ]] || usage
((${#members[@]} <= 8)) || { echo "at most 8 members: the device tool returns 8 files" >&2; exit 2; }
[[ -f "$data" ]] || { echo "no data at $data" >&2; exit 2; }

python=${PYTHON:-python3}
carried_dir=${CARRIED_DIR:-training/carried}
work=$(mktemp -d)
mkdir -p "$out"

if [[ -d .gpu/wheels ]]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$work/site" .gpu/wheels/*.whl
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export KERAS_BACKEND=jax
# Several processes share the GPU: none may claim most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

declare -A pids=()
for member in "${members[@]}"; do
    IFS=: read -r name seed config <<<"$member"
    [[ "$name" =~ ^[A-Za-z0-9_-]+$ && "$seed" =~ ^[0-9]+$ ]] || usage
    run="$work/runs/$name"
    arguments=(train --data "$data" --out "$run" --seed "$seed")
    [[ -n "${config:-}" ]] && arguments+=(--config "$config")
    if [[ -d "$carried_dir/$name" ]]; then
        mkdir -p "$work/runs"
        cp -r "$carried_dir/$name" "$run"
        arguments+=(--resume)
    fi
    echo "$name: python -m training ${arguments[*]}"
    # timeout's SIGINT is the KeyboardInterrupt `train` answers by stopping at its last epoch.
    timeout --signal=INT --kill-after=60 "${minutes}m" \
        "$python" -m training "${arguments[@]}" >"$work/$name.log" 2>&1 &
    pids[$name]=$!
done

status=0
for name in "${!pids[@]}"; do
    run="$work/runs/$name"
    if wait "${pids[$name]}"; then
        cp "$work/$name.log" "$run/gpu.log"
        # What export needs: the shipped weights, run.json and the epoch log, not the
        # checkpoint (weights, momentum and average: over the tool's 16 MiB a file).
        tar -czf "$out/$name.run.tar.gz" -C "$work/runs" --exclude "$name/checkpoint" \
            --exclude "$name/weight_average.npz" --exclude "$name/run.lock" "$name"
        echo "$name: finished -> $name.run.tar.gz"
    elif "$python" -m training trim --run "$run" --to "$work/carried/$name" \
        >>"$work/$name.log" 2>&1; then
        cp "$work/$name.log" "$work/carried/$name/gpu.log"
        tar -czf "$out/$name.carried.tar.gz" -C "$work/carried" "$name"
        echo "$name: stopped at $(($(wc -l <"$run/training_log.csv") - 1)) epochs" \
            "-> $name.carried.tar.gz"
    else
        echo "$name: failed, nothing to carry; its log:" >&2
        tail -n 40 "$work/$name.log" >&2
        status=1
    fi
done
exit "$status"
