#!/usr/bin/env bash
# LAE against the peer variable-rate method (CompressAI's gain-based VBR models) in one sweep, at
# CPU scale: two CompressAI backbones (N=64, M=128) × {LAE, gain}, trained from scratch with the
# λ-sampled RD loss on the shared photos (128×128 crops, batch 8, 15 epochs = 60 steps), then one
# summary (4 Kodak images, real bitstreams) with the BD-rate of every curve against the others.
set -euo pipefail
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/../.."
python src/train.py -m experiment=vbr_tcm model/backbone=bmshj2018_hyperprior,mbt2018_mean \
    model/rate=lae,gain model.backbone.N=64 model.backbone.M=128 trainer=cpu logger=csv \
    data.crop_size=128 data.batch_size=8 data.num_workers=1 data.max_val_images=2 \
    trainer.max_epochs=15 trainer.check_val_every_n_epoch=15 optim.lr=5e-4 \
    "optim.scheduler.milestones=[]" "optim.scheduler.factors=[]" validate_after_fit=false \
    hydra.sweep.dir=logs/recipes/peers
python src/eval.py study=summary "runs=[logs/recipes/peers]" max_images=4 lmbda_step=1 \
    num_threads=1 "anchors=[]" hydra.run.dir=logs/recipes/peers_summary
