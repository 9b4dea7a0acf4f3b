#!/usr/bin/env bash
# The bundled demo model, end to end: five stages on the paper's λ set (experiment=demo/fixed,
# demo/lae, demo/joint, demo/extend, demo/extend2), each started from the previous stage's last
# checkpoint; then the mask ranges centred (recentre.py), two stages on the wider λ set
# (demo/wide_lae: the LAEs alone; demo/wide: everything, λ-balanced loss) and one on a wider
# one still with random quality maps (demo/roi, for --roi); then the export to
# src/lae_vbr/assets/demo.pt. Rerunning resumes: a stage whose folder holds
# checkpoints/last.ckpt continues from it (and ends at once when it is complete).
#
#   OMP_NUM_THREADS=1 bash experiments/demo_model/train.sh [logs/demo_model [overrides...]]
#
# DEMO_OUT sets where the exported model goes (default: the bundled one). DEMO_STAGES lists
# the stages (default: the eight of the bundled model). A list that starts later needs the
# previous stage's weights: DEMO_STAGES=roi bash ... logs/demo_model init_from=<stage 7>.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:-logs/demo_model}
previous=""
read -r -a stages <<< "${DEMO_STAGES:-fixed lae joint extend extend2 wide_lae wide roi}"
for stage in "${stages[@]}"; do
    out="$root/$stage"
    args=(experiment=demo/$stage "hydra.run.dir=$out")
    if [[ -f "$out/checkpoints/last.ckpt" ]]; then
        args+=("ckpt_path=$out/checkpoints/last.ckpt")
    elif [[ "$stage" == wide_lae ]]; then
        python experiments/demo_model/recentre.py "$previous" --out "$root/recentred.pt"
        args+=("init_from=$root/recentred.pt")
    elif [[ -n "$previous" ]]; then
        args+=("init_from=$previous")
    fi
    echo "== stage $stage: python src/train.py ${args[*]}"
    start=$(date +%s)
    python src/train.py "${args[@]}" "${@:2}"
    echo "== stage $stage took $(( $(date +%s) - start )) s"
    previous="$out/checkpoints/last.ckpt"
done
python experiments/demo_model/export.py "$previous" --out "${DEMO_OUT:-src/lae_vbr/assets/demo.pt}" --name lae-vbr-demo
