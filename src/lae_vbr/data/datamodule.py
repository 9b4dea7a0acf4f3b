"""Image-folder datasets and the Lightning data module used for training and evaluation.

Training draws one random ``crop_size`` crop from each image (smaller images are reflect-padded
up to it); validation and test use whole images. Batches are float tensors in [0, 1], (B, 3,
H, W). The shuffled order and every crop position come from one ``torch.Generator`` seeded
with ``seed``, inside the sampler, so a run is reproducible and its crops do not depend on
``num_workers``.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .images import DataError, DataWarning, list_images, load_rgb_image
from .sample import sample_images
from .tensors import image_to_tensor

__all__ = ["ImageDataModule", "ImageDataset", "SeededShuffle", "random_crop", "seed_worker"]

SOURCES = ("folders", "sample")


class ImageDataset(Dataset[Tensor]):
    """Images as float (3, H, W) tensors in [0, 1]: whole, or one random crop per access.

    An index is an int, or ``(index, crop_seed)`` as yielded by SeededShuffle. A file that fails
    to decode (e.g. truncated after its header) is reported once with a DataWarning, remembered,
    and replaced by the next readable image, so an epoch never stops half-way.

    With ``cache`` the decoded images stay in memory (in each loader process): on a small set
    of large photos, decoding a whole PNG for every 128-pixel crop costs more than the step.
    """

    def __init__(
        self,
        files: Sequence[Path],
        crop_size: int | None = None,
        seed: int = 0,
        cache: bool = False,
    ):
        if not files:
            raise DataError("an image dataset needs at least one file")
        self.files = [Path(f) for f in files]
        self.crop_size = crop_size
        self.seed = seed
        self.bad: set[Path] = set()
        self.cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> Tensor:
        index, crop_seed = key if isinstance(key, tuple) else (key, None)
        image = self._load(index)
        if self.crop_size is not None:
            # An int index (e.g. Lightning's overfit_batches sampler) always gives the same crop.
            rng = np.random.default_rng(crop_seed if crop_seed is not None else [self.seed, index])
            image = random_crop(image, self.crop_size, rng)
        return image_to_tensor(image)[0]

    def _load(self, index: int) -> np.ndarray:
        if self.cache is None:
            return self._decode(index)
        if index not in self.cache:
            self.cache[index] = self._decode(index)
        return self.cache[index]

    def _decode(self, index: int) -> np.ndarray:
        for step in range(len(self.files)):
            path = self.files[(index + step) % len(self.files)]
            if path in self.bad:
                continue
            try:
                return load_rgb_image(path)
            except DataError as err:
                self.bad.add(path)
                message = f"skipped an unreadable image, the next one is used instead: {err}"
                warnings.warn(message, DataWarning, stacklevel=2)
        raise DataError(
            f"none of the {len(self.files)} images (e.g. {self.files[0]}) can be decoded; "
            "fix or replace them"
        )


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` x ``size`` crop of an (H, W, C) array, reflect-padding sides shorter than it.

    numpy reflects repeatedly when the pad exceeds the side (and repeats a single row or column),
    so even a 1x1 image gives a full crop.
    """
    short = [max(size - n, 0) for n in image.shape[:2]]
    if any(short):
        image = np.pad(image, [(s // 2, s - s // 2) for s in short] + [(0, 0)], mode="reflect")
    top = int(rng.integers(0, image.shape[0] - size + 1))
    left = int(rng.integers(0, image.shape[1] - size + 1))
    return image[top : top + size, left : left + size]


class SeededShuffle(Sampler[tuple[int, int]]):
    """Yields ``(index, crop_seed)`` in a random order, both drawn from one seeded generator.

    The generator runs on across epochs, so each epoch differs while two runs with the same
    seed see the same images and crops, whatever the number of workers.
    """

    def __init__(self, num_items: int, seed: int):
        self.num_items = num_items
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.num_items, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.num_items,), generator=self.generator).tolist()
        return iter(zip(order, seeds, strict=True))


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and numpy in a loader worker from its torch seed (itself seeded)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def stack_same_size(batch: list[Tensor]) -> Tensor:
    """Collate whole images, with a clear error when their sizes differ."""
    sizes = sorted({tuple(x.shape[-2:]) for x in batch})
    if len(sizes) > 1:
        raise DataError(
            f"cannot batch whole images of different sizes {sizes}; use data.val_batch_size=1"
        )
    return torch.stack(batch)


class ImageDataModule(L.LightningDataModule):
    """Training crops and whole validation/test images from folders or the bundled sample.

    Args:
        train_dir, val_dir, test_dir: image folders (None: the split is absent, or comes from
            ``source="sample"``). Test falls back to validation when it has neither.
        source: "folders" (the ``*_dir`` arguments only) or "sample" (scikit-image's photos
            for train and val wherever no folder is given).
        crop_size: side of the square training crops.
        batch_size, val_batch_size: batch sizes; whole images differ in size, hence 1.
        max_val_images: validate on the first N images only (None: all).
        num_workers, pin_memory (None: when CUDA is available), persistent_workers (used when
            num_workers > 0): DataLoader settings.
        seed: seeds shuffling, crops and workers (None: torch's global seed, the same on every
            process once ``seed_everything`` has run, which distributed training needs).
        recursive: also collect images from sub-folders.
        cache_images: keep the decoded training images in memory (a small set of large photos:
            decoding dominates the step otherwise); off for sets larger than memory.
    """

    def __init__(
        self,
        train_dir: str | Path | None = None,
        val_dir: str | Path | None = None,
        test_dir: str | Path | None = None,
        source: str = "folders",
        crop_size: int = 256,
        batch_size: int = 8,
        val_batch_size: int = 1,
        max_val_images: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int | None = 0,
        recursive: bool = False,
        cache_images: bool = False,
    ):
        super().__init__()
        if source not in SOURCES:
            raise DataError(f"data.source={source!r} is unknown; use one of {list(SOURCES)}")
        for name, value in (
            ("crop_size", crop_size),
            ("batch_size", batch_size),
            ("val_batch_size", val_batch_size),
        ):
            if int(value) < 1:
                raise DataError(f"data.{name}={value} must be a positive integer")
        if max_val_images is not None and int(max_val_images) < 1:
            raise DataError(f"data.max_val_images={max_val_images}: use a positive number or null")
        if int(num_workers) < 0:
            raise DataError(f"data.num_workers={num_workers} must be 0 or more")
        self.save_hyperparameters(logger=False)
        self.dirs = {"train": train_dir, "val": val_dir, "test": test_dir}
        self.source = source
        self.crop_size = int(crop_size)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size)
        self.max_val_images = None if max_val_images is None else int(max_val_images)
        self.num_workers = int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.seed = int(seed) if seed is not None else torch.initial_seed() % 2**31
        self.recursive = recursive
        self.cache_images = bool(cache_images)
        self.files: dict[str, list[Path]] = {}  # every listed image per split (uncapped)

    # -- file lists ---------------------------------------------------------------------------
    def split_files(self, split: str) -> list[Path]:
        """The images of "train", "val" (capped by max_val_images) or "test"; [] when absent."""
        files = self._listed(split)
        if split == "val" and self.max_val_images is not None:
            return files[: self.max_val_images]
        return files

    def _listed(self, split: str) -> list[Path]:
        """Every image of a split, listed (and checked) once."""
        if split not in self.files:
            folder = self.dirs[split]
            if folder is not None:
                self.files[split] = list_images(
                    folder, recursive=self.recursive, key=f"data.{split}_dir"
                )
            elif self.source == "sample" and split in ("train", "val"):
                self.files[split] = sample_images(split)
            elif split == "test":
                self.files[split] = self._listed("val")
            else:
                self.files[split] = []
        return self.files[split]

    def setup(self, stage: str | None = None) -> None:
        """List (and check) the images the stage needs; errors name what is missing."""
        if stage in (None, "fit") and not self.split_files("train"):
            raise DataError(
                "no training images: set data.train_dir=<folder> (or use data=sample / "
                "data=photos; data=kodak is for validation and testing only)"
            )
        if stage in (None, "fit"):
            self.split_files("val")  # optional when fitting: no val_dir means no validation
        if stage == "validate" and not self.split_files("val"):
            raise DataError("no validation images: set data.val_dir=<folder>")
        if stage in (None, "test") and not self.split_files("test"):
            raise DataError("no test images: set data.test_dir=<folder> or data.val_dir=<folder>")

    # -- loaders -------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        dataset = ImageDataset(
            self.split_files("train"), self.crop_size, self.seed, cache=self.cache_images
        )
        return self._loader(dataset, self.batch_size, SeededShuffle(len(dataset), self.seed))

    def val_dataloader(self) -> DataLoader | list:
        files = self.split_files("val")
        if not files:
            return []
        dataset = ImageDataset(files)
        return self._loader(dataset, self.val_batch_size, self._eval_sampler(dataset))

    def test_dataloader(self) -> DataLoader:
        dataset = ImageDataset(self.split_files("test"))
        return self._loader(dataset, self.val_batch_size, self._eval_sampler(dataset))

    def _eval_sampler(self, dataset: ImageDataset) -> Sampler | None:
        """Under DDP each process evaluates its own share of the images, each image once.

        Lightning's default DistributedSampler pads the last share with repeated images, which
        would count them twice in the per-λ metrics (torchmetrics then syncs the sums).
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        if len(dataset) < trainer.world_size:
            raise DataError(
                f"{len(dataset)} evaluation images for {trainer.world_size} processes: every "
                "process needs at least one; use more images (data.max_val_images) or fewer devices"
            )
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def _loader(
        self, dataset: ImageDataset, batch_size: int, sampler: Sampler | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=None if dataset.crop_size else stack_same_size,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(self.seed),
        )
