"""The claims study's tables, from its results files: ``experiments/claims/results.md``.

    python experiments/claims/summarise.py [--results experiments/claims] [--out FILE]

Reads what ``run.py --only eval`` and ``throughput.py`` wrote (``results/``,
``results_photos_val/``, each with N/2 in ``half/``; ``throughput.json``) and writes the
tables the README quotes: the BD-rates of every comparison at N/2 and N on both test sets,
the seed spread, the R-λ fits and ``--bpp`` accuracy of the LAE models, and each arm's size
and training speed. Nothing is computed here that the files do not hold; a missing evaluation
is shown as such.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lae_vbr.evaluation.files import markdown_table

HERE = Path(__file__).resolve().parent
#: (column title, results folder under RESULTS)
COLUMNS = (
    ("Kodak N/2", "results/half"),
    ("Kodak N", "results"),
    ("photos/val N/2", "results_photos_val/half"),
    ("photos/val N", "results_photos_val"),
)
METRICS = {"psnr-rgb": "PSNR", "ms-ssim-rgb-db": "MS-SSIM (dB)"}
LAE_MODELS = ("lae", "lae_seed2", "lae_no_context", "lae_encoder_only")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _table(headers: list[str], rows: list[list[str]]) -> str:
    return markdown_table(headers, rows).rstrip("\n")


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "not evaluated"
    if entry["bd_rate"] is None:
        return f"— ({entry.get('note') or 'not computable'})"
    overlap = entry.get("overlap")
    flag = f" † ({100 * overlap:.0f} %)" if overlap is not None and overlap < 0.75 else ""
    return f"{entry['bd_rate']:+.2f} %{flag}"


def bd_tables(results: Path) -> str:
    """One table per metric: every (test, anchor) pair found, one column per evaluation."""
    found = {folder: _read(results / folder / "bd_rate.json") for _, folder in COLUMNS}
    out = []
    for metric, title in METRICS.items():
        pairs: dict[tuple[str, str], dict[str, Any]] = {}
        for folder, payload in found.items():
            for entry in (payload or {}).get("results", []):
                if entry["metric"] == metric:
                    pairs.setdefault((entry["test"], entry["anchor"]), {})[folder] = entry
        rows = [
            [f"`{test}` vs `{anchor}`", *(_cell(cells.get(folder)) for _, folder in COLUMNS)]
            for (test, anchor), cells in pairs.items()
        ]
        out.append(f"### BD-rate, {title}\n\n" + _table(["curve", *(c for c, _ in COLUMNS)], rows))
    return "\n\n".join(out)


def rate_axis_table(results: Path) -> str:
    """The R-λ fit and --bpp accuracy of each plainly coded LAE model, where evaluated."""
    rows = []
    for column, folder in COLUMNS:
        fits = (_read(results / folder / "rlambda.json") or {}).get("models", {})
        control = (_read(results / folder / "rate_control.json") or {}).get("models", {})
        for name in (n for n in LAE_MODELS if n in fits):
            fit, bpp = fits[name], control.get(name, {})
            accuracy = (
                f"{100 * bpp['mean_abs_error']:.2f} % ({bpp['cases']} targets)"
                if "mean_abs_error" in bpp
                else bpp.get("note", "—")
            )
            rows.append([
                column, f"`{name}`",
                f"{fit['slope_free_mean']:.3f} ± {fit['slope_free_std']:.3f}",
                f"{fit['r2_free_mean']:.4f}", f"{fit['r2_slope1_mean']:.4f}",
                f"{fit['mean_abs_err_bpp_slope1']:.4f}", accuracy,
            ])  # fmt: skip
    headers = ["evaluation", "model", "free slope (mean ± std over images)", "R² free",
               "R² slope 1", "slope-1 mean abs error (bpp)", "`--bpp` mean abs error"]  # fmt: skip
    return "### R-λ model and rate control\n\n" + _table(headers, rows)


def range_table(results: Path) -> str:
    """Each curve's bpp and PSNR range (what the BD-rates' overlaps come from)."""
    rows = []
    for column, folder in COLUMNS:
        for path in sorted((results / folder).glob("*.json")):
            curve = _read(path) or {}
            points = curve.get("results", {})
            if "bpp" not in points or "name" not in curve:
                continue
            bpp, psnr = points["bpp"], points["psnr-rgb"]
            rows.append([column, f"`{curve['name']}`", f"{min(bpp):.3f} – {max(bpp):.3f}",
                         f"{min(psnr):.2f} – {max(psnr):.2f}"])  # fmt: skip
    headers = ["evaluation", "curve", "bpp (mean over images)", "PSNR (dB)"]
    return "### Rate and quality ranges\n\n" + _table(headers, rows)


def speed_table(results: Path) -> str:
    record = _read(results / "throughput.json")
    if record is None:
        return "### Size and training speed\n\nnot measured (`throughput.json` missing)"
    rows = [
        [f"`{name}`", f"{arm['parameters']:,}", f"{arm['images_per_s_median']:.2f}",
         f"{arm['vs_fixed']:.3f}×"]
        for name, arm in record["arms"].items()
    ]  # fmt: skip
    note = (
        f"`{record['command']}`: batch {record['batch']}, {record['crop']}² crops, "
        f"{record['threads']} thread, median of {record['rounds']} rounds of "
        f"{record['steps_per_round']} steps, the arms in turn."
    )
    headers = ["arm", "parameters", "training images/s", "vs fixed"]
    return "### Size and training speed\n\n" + _table(headers, rows) + "\n\n" + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE)
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    parts = [
        "# Claims study: the numbers",
        "Written by `python experiments/claims/summarise.py` from the results files beside it "
        "(BD-rates against the anchor named in each row; negative = fewer bits at equal "
        "quality; † quality ranges overlapping less than 75 %, the overlap in brackets).",
        bd_tables(args.results),
        rate_axis_table(args.results),
        range_table(args.results),
        speed_table(args.results),
    ]
    args.out.write_text("\n\n".join(parts) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
