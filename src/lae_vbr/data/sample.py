"""The sample photos that ship inside scikit-image, so a fresh install trains with no download.

Only the RGB natural photographs are used (no synthetic, grayscale or tiny images); all are at
least 300 pixels on each side. The stereo pair ``motorcycle_left/right`` stays in one split so
validation never sees a near-copy of a training image.
"""

from __future__ import annotations

from pathlib import Path

from .images import DataError

__all__ = ["SAMPLE_SPLITS", "sample_images"]

SAMPLE_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut.png",
        "coffee.png",
        "hubble_deep_field.jpg",
        "ihc.png",
        "motorcycle_left.png",
        "motorcycle_right.png",
        "retina.jpg",
    ),
    "val": ("chelsea.png", "rocket.jpg"),
}


def sample_images(split: str) -> list[Path]:
    """Paths of the sample photos of ``split`` ("train" or "val") in the installed scikit-image."""
    if split not in SAMPLE_SPLITS:
        raise DataError(f"unknown sample split {split!r}; use one of {sorted(SAMPLE_SPLITS)}")
    try:
        import skimage.data
    except ImportError as err:
        raise DataError(
            "data=sample reads the photos shipped with scikit-image, which is not installed; "
            "run `pip install scikit-image` or choose another data config"
        ) from err
    root = Path(skimage.data.data_dir)
    paths = [root / name for name in SAMPLE_SPLITS[split]]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise DataError(
            f"sample photos missing from {root}: {', '.join(missing)}; reinstall scikit-image "
            "(`pip install --force-reinstall scikit-image`) or choose another data config"
        )
    return paths
