"""Centre each latent channel's encoder-side mask range inside the LAE's (1/e, e).

    python experiments/demo_model/recentre.py src/lae_vbr/assets/demo.pt --out recentred.pt

The encoder-side LAE scales latent channel c by m_c(λ) = exp(s_c(λ)) with s_c ∈ (−1, 1). The
scale of y itself is a free choice of the analysis transform: multiplying g_a's output channel c
by k_c and every mask of that channel by 1/k_c codes exactly the same latent. Training at the
largest λ first (mask 1) puts that choice at the top of the range, so at the smallest λ half of
the channels sit at the softsign's lower end, where the gradient vanishes and the rate cannot
fall further (``mask_range.py``). This script moves each channel's range [s_c(λ_0), s_c(λ_top)]
to the middle of (−1, 1): g_a's last convolution is scaled by k_c = exp(mid_c) and the last
layer of the λ embedding f_λ is changed, by the smallest change in the least-squares sense,
so that s'_c = s_c + mid_c at every trained λ index. The model codes the same latents as before
(up to the contextual branch, whose input is now scaled: α is reported, and it is negligible
when small), and training can then move both ends of the range.

The output is a codec file like the bundle's, in float32, for ``init_from`` (and for
``quick_rd.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from lae_vbr.models.registry import load_codec, save_codec_bundle

#: The largest |s| a centred mask is given (softsign⁻¹ grows without bound towards 1).
S_LIMIT = 0.95


def inverse_softsign(s: torch.Tensor) -> torch.Tensor:
    return s / (1 - s.abs())


def recentre(model: torch.nn.Module, num_lmbdas: int) -> dict[str, float]:
    """Centre the encoder LAE's per-channel ranges in place; returns a summary."""
    embedding = model.modnet_ga.mask.lmd_map
    last = embedding.fc_layers[-1]
    idx = torch.arange(num_lmbdas, dtype=torch.float32)
    with torch.no_grad():
        s = F.softsign(embedding(idx))  # (num_lmbdas, C)
        mid = (s[0] + s[-1]) / 2
        target = (s - mid).clamp(-S_LIMIT, S_LIMIT)
        # Hidden features of f_λ's last layer at the trained indices, with a column for its bias.
        hidden = embedding.fc_layers[0](idx.reshape(-1, 1)).relu()
        design = torch.cat((hidden, torch.ones(num_lmbdas, 1)), dim=1)
        change = torch.linalg.pinv(design) @ (inverse_softsign(target) - embedding(idx))
        last.weight += change[:-1].T
        last.bias += change[-1]
        conv = model.g_a[-1]
        conv.weight *= torch.exp(mid).reshape(-1, 1, 1, 1)
        conv.bias *= torch.exp(mid)
        reached = F.softsign(embedding(idx))
    return {
        "channels": float(mid.numel()),
        "mean shift of log m": float(mid.mean()),
        "largest shift": float(mid.abs().max()),
        "max |s' - target|": float((reached - target).abs().max()),
        "clipped entries": float(((s - mid).abs() > S_LIMIT).sum()),
        "alpha (contextual branch)": float(model.modnet_ga.mask.alpha.detach().abs().max()),
        "mean log m at index 0, before": float(s[0].mean()),
        "mean log m at index 0, after": float(reached[0].mean()),
        "mean log m at the top index, before": float(s[-1].mean()),
        "mean log m at the top index, after": float(reached[-1].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    codec = load_codec(args.checkpoint)
    model = codec.model.float()
    for key, value in recentre(model, model.num_lmbdas).items():
        print(f"{key}: {value:.4g}")
    save_codec_bundle(args.out, model, dict(codec.config))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
