"""Studies run by ``python src/eval.py study=<name>``: the R-λ model, rate control, latent
refinement; and the latent toy experiment trained by ``python src/train.py
experiment=latent_toy``."""
