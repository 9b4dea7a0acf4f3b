#!/usr/bin/env bash
# The latent toy at CPU scale, on the fixed-rate teachers of experiments/recipes/run.sh (run that
# first). A gain can only align latents whose channels correspond, so the low-rate model is the
# λ=0.05 teacher fine-tuned to λ=0.0025 (60 steps); the mapper (per-channel gains, no context)
# then learns y_high → y_low and back for 15 epochs (60 steps) on the shared photos.
set -euo pipefail
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/../.."
HIGH=logs/recipes/teachers/5_fixed_tcm_tiny_l0.05/checkpoints/last.ckpt
SMALL=(trainer=cpu logger=csv data.crop_size=128 data.batch_size=8 data.num_workers=1
       data.max_val_images=2 trainer.max_epochs=15 trainer.check_val_every_n_epoch=15
       validate_after_fit=false)
python src/train.py experiment=fixed_tcm model/backbone=tcm_tiny "${SMALL[@]}" optim.lr=5e-4 \
    "optim.scheduler.milestones=[]" "optim.scheduler.factors=[]" lmbda.value=0.0025 \
    init_from=$HIGH hydra.run.dir=logs/latent_toy/low_from_high
python src/train.py experiment=latent_toy "${SMALL[@]}" high_ckpt=$HIGH \
    low_ckpt=logs/latent_toy/low_from_high/checkpoints/last.ckpt hydra.run.dir=logs/latent_toy/gain
python src/train.py experiment=latent_toy "${SMALL[@]}" high_ckpt=$HIGH \
    low_ckpt=logs/latent_toy/low_from_high/checkpoints/last.ckpt latent_toy.contextual=true \
    hydra.run.dir=logs/latent_toy/contextual
