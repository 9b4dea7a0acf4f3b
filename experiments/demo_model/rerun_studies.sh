#!/usr/bin/env bash
# Every study whose records quote the bundled model, run again on a model (default: the bundled
# one), in two lanes of one thread each; each study's records replace those in its experiments/
# folder. Run it after the bundled model changes, then update the READMEs from the records.
#
#   bash experiments/demo_model/rerun_studies.sh [CHECKPOINT [BASELINE]]
#
# BASELINE (e.g. the previous bundle, `git show HEAD~1:src/lae_vbr/assets/demo.pt > old.pt`)
# is what study=roi compares the uniform curve with (study.baseline_checkpoint). Each study's
# Hydra run folder and log stay under logs/rerun_studies/<name>; the time each took is printed.
# The DLM schedule comparison (experiments/dlm/compare_schedules.py, 20 min) is not in it.
set -euo pipefail
cd "$(dirname "$0")/../.."
checkpoint=${1:-src/lae_vbr/assets/demo.pt}
baseline=${2:-}
runs=logs/rerun_studies
kodak=${LAE_VBR_SHARED:-../shared}/data/kodak
photos=${LAE_VBR_SHARED:-../shared}/data/photos/val
export OMP_NUM_THREADS=1

study() {  # name, records folder, overrides...: run one, copy its records (json, md, png, csv)
    local name=$1 dest=$2 start
    start=$(date +%s)
    python src/eval.py checkpoint="$checkpoint" num_threads=1 "hydra.run.dir=$runs/$name" "${@:3}" \
        > "$runs/$name.out" 2>&1 || { echo "!! $name failed: see $runs/$name.out"; return 1; }
    mkdir -p "$dest"
    (cd "$runs/$name" && find . -path ./.hydra -prune -o -type f \
        \( -name '*.json' -o -name '*.md' -o -name '*.png' -o -name '*.csv' \) -print) \
        | while read -r file; do mkdir -p "$dest/$(dirname "$file")"; cp "$runs/$name/$file" "$dest/$file"; done
    echo "== $name: $(( $(date +%s) - start )) s ($(date +%H:%M:%S))"
}

lane_one() {
    study demo_model experiments/demo_model lmbda_step=1
    study rate_control_photos_val experiments/rate_control/photos_val \
        study=ratecontrol "test_dir=$photos"
    study rate_control_photos_val_psnr experiments/rate_control/photos_val_psnr \
        study=ratecontrol "test_dir=$photos" 'study.kinds=[psnr]' 'study.methods=[estimate]'
    study roi_photos_val experiments/roi/photos_val study=roi "test_dir=$photos" \
        ${baseline:+"study.baseline_checkpoint=$baseline"}
}

lane_two() {
    study rlambda experiments/rlambda study=rlambda study.lmbda_step=0.5
    study dlambda experiments/dlambda study=dlambda "test_dir=$kodak" max_images=12
    study rate_control_kodak experiments/rate_control/kodak \
        study=ratecontrol "test_dir=$kodak" max_images=12
    study rate_control_kodak_psnr experiments/rate_control/kodak_psnr \
        study=ratecontrol "test_dir=$kodak" max_images=12 'study.kinds=[psnr]' 'study.methods=[estimate]'
    study roi_kodak experiments/roi/kodak study=roi "test_dir=$kodak" \
        ${baseline:+"study.baseline_checkpoint=$baseline"}
    study dlm experiments/dlm study=dlm max_images=2
}

mkdir -p "$runs"
lane_one & first=$!
lane_two & second=$!
status=0
wait "$first" || status=1
wait "$second" || status=1
exit "$status"
