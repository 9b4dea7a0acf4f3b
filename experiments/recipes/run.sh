#!/usr/bin/env bash
# The fixed-rate and two-stage recipes at CPU scale: tcm_tiny, the shared photos (32 train
# images, 128×128 crops, batch 8), 15 epochs (60 steps) per run, one thread per process.
# Outputs in logs/recipes/; summary of all runs on 4 Kodak images at the end.
set -euo pipefail
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/../.."
SMALL=(model/backbone=tcm_tiny trainer=cpu logger=csv data.crop_size=128 data.batch_size=8
       data.num_workers=1 data.max_val_images=2 trainer.max_epochs=15
       trainer.check_val_every_n_epoch=15 optim.lr=5e-4 "optim.scheduler.milestones=[]"
       "optim.scheduler.factors=[]" validate_after_fit=false)
LAMBDAS=0.0025,0.0035,0.0067,0.013,0.025,0.05

# 1. the six fixed-rate teachers (one multirun, one folder per λ)
python src/train.py -m experiment=fixed_tcm "${SMALL[@]}" lmbda.value=$LAMBDAS \
    hydra.sweep.dir=logs/recipes/teachers
# 2. stage 1: frozen backbone (= the λ=0.05 teacher), LAEs with latent distillation + L2
python src/train.py experiment=vbr_stage1 "${SMALL[@]}" stage.teachers=logs/recipes/teachers \
    hydra.run.dir=logs/recipes/stage1
# 3. stage 2: everything, from stage 1
python src/train.py experiment=vbr_stage2 "${SMALL[@]}" \
    init_from=logs/recipes/stage1/checkpoints/last.ckpt hydra.run.dir=logs/recipes/stage2
# 4. for comparison, one stage with the budget of both: everything trains from the λ=0.05 teacher
python src/train.py experiment=vbr_tcm "${SMALL[@]}" trainer.max_epochs=30 \
    trainer.check_val_every_n_epoch=30 init_from=logs/recipes/teachers/5_fixed_tcm_tiny_l0.05/checkpoints/last.ckpt \
    run_name=one_stage_tcm_tiny hydra.run.dir=logs/recipes/one_stage
# 5. every run evaluated (real bitstreams, 4 Kodak images), one plot and BD-rate table
python src/eval.py study=summary \
    "runs=[logs/recipes/teachers,logs/recipes/stage1,logs/recipes/stage2,logs/recipes/one_stage]" \
    max_images=4 lmbda_step=1 num_threads=1 "anchors=[]" hydra.run.dir=logs/recipes/summary
