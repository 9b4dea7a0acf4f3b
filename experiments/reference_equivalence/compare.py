"""Compare lae-vbr's TCM / TCM-VBR with the reference implementation, weight for weight.

    git clone https://github.com/gitgzq/VBR_work /tmp/VBR_work
    python experiments/reference_equivalence/compare.py --reference /tmp/VBR_work \
        --image ../shared/fixtures/seed_reference/input_256.png --out results.json

The reference code is imported from the given checkout at run time (it needs ``timm`` and
``einops``: ``pip install timm einops``); nothing of it is part of this project. Both models get
the same random weights (the LAE's zero-initialised last layer and α are randomised too, so λ
matters), then forward outputs at λ index 0, 2.5 and 5, the bitstreams at λ index 3 and their
decoded images are compared. The published ``TCM_VBR.forward`` unpacks the LAE's ``(y, mask)``
tuple incorrectly and crashes; this script fixes those two lines in memory before importing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lae_vbr.models import TCM, TCMVBR

FORWARD_FIXES = {  # the LAE returns (feature, mask); the published forward keeps the tuple
    f"{' ' * 8}{lhs} = self.{lae}({arg}, lmd_index)\n": (
        f"{' ' * 8}{lhs}, _ = self.{lae}({arg}, lmd_index)\n"
    )
    for lhs, lae, arg in (("y", "modnet_ga", "y"), ("y_hat", "modnet_gs", "y_hat"))
}


def import_reference(checkout: Path) -> types.ModuleType:
    source = (checkout / "models" / "tcm.py").read_text()
    for bad, good in FORWARD_FIXES.items():
        source = source.replace(bad, good)
    torch.Tensor.cuda = lambda self, *a, **k: self  # the reference hard-codes .cuda()
    np.int = int  # removed from NumPy, still used by the reference
    spec = importlib.util.spec_from_loader("reference_tcm", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, str(checkout / "models" / "tcm.py"), "exec"), module.__dict__)
    return module


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def compare(ref_model, ours, x: torch.Tensor, variable_rate: bool) -> dict:
    lam_args = (lambda v: (v,)) if variable_rate else (lambda v: ())
    report: dict = {"forward": {}}
    with torch.no_grad():
        for lam in (0.0, 2.5, 5.0) if variable_rate else (None,):
            a, b = ref_model(x, *lam_args(lam)), ours(x, *lam_args(lam))
            report["forward"][str(lam)] = {
                "x_hat_max_abs_diff": max_abs(a["x_hat"], b["x_hat"]),
                "lik_y_max_abs_diff": max_abs(a["likelihoods"]["y"], b["likelihoods"]["y"]),
                "lik_z_max_abs_diff": max_abs(a["likelihoods"]["z"], b["likelihoods"]["z"]),
            }
        ref_model.update()
        ours.update()
        lam = 3.0
        # the reference computes its entropy parameters in float32: compare like with like
        args = (*lam_args(lam), "float32") if variable_rate else (None, "float32")
        ea, eb = ref_model.compress(x, *lam_args(lam)), ours.compress(x, *args)
        da = ref_model.decompress(ea["strings"], ea["shape"], *lam_args(lam))
        db = ours.decompress(eb["strings"], eb["shape"], *args)
    ya, yb = ea["strings"][0][0], eb["strings"][0][0]
    report["coding"] = {
        "lmbda_idx": lam if variable_rate else None,
        "y_bytes": [len(ya), len(yb)],
        "z_bytes": [len(ea["strings"][1][0]), len(eb["strings"][1][0])],
        "y_identical": ya == yb,
        "z_identical": ea["strings"][1][0] == eb["strings"][1][0],
        "decompress_x_hat_max_abs_diff": max_abs(da["x_hat"], db["x_hat"]),
    }
    if variable_rate:
        report["coding"]["mean_log_mask"] = [float(ea["m_y"]), float(eb["log_mask_mean"])]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="VBR_work checkout")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ref = import_reference(args.reference)
    rgb = np.array(Image.open(args.image).convert("RGB"))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    cfg = {"config": [2] * 6, "head_dim": [8, 16, 32, 32, 16, 8], "drop_path_rate": 0.0}
    results = {"image": args.image.name, "N": args.N, "seed": args.seed, "torch": torch.__version__}
    for name, ref_cls, our_cls, vbr in (
        ("tcm", ref.TCM, TCM, False),
        ("tcm_vbr", ref.TCM_VBR, TCMVBR, True),
    ):
        torch.manual_seed(args.seed)
        ref_model = ref_cls(N=args.N, M=320, **cfg).eval()
        state = ref_model.state_dict()
        gen = torch.Generator().manual_seed(args.seed + 1)
        for key in state:
            if "fc_layers.1" in key or key.endswith("mask.alpha"):
                state[key] = 0.05 * torch.randn(state[key].shape, generator=gen)
        ref_model.load_state_dict(state)
        ours = our_cls(N=args.N).eval()
        ours.load_state_dict(state)
        results[name] = compare(ref_model, ours, x, vbr)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
