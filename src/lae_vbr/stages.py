"""Stage 1 of the paper's two-stage training of a variable-rate codec.

Stage 1 ("static learning of latents") freezes the backbone and trains only the LAEs, on the
λ-sampled RD loss plus two terms:

* latent distillation: ``latent_weight`` (0.03) · MSE between the LAE-scaled latent and the
  latent ``g_a(x)`` of the fixed-rate teacher trained for the drawn λ, one teacher per λ;
* ``l2_weight`` (1e-4) · Σ ‖w‖₂ over the LAE parameters (each tensor's L2 norm, summed).

With ``latent_weight: 0`` and no ``teachers`` the stage needs only one fixed-rate model, given
as ``init_from`` (the backbone trained at the largest λ): the scaled-down schedule of
``experiment=demo/lae``, where six teachers would cost more than the whole run.

Stage 2 is the ordinary :class:`~lae_vbr.module.CompressionModule` (everything trains on the RD
loss), started from the stage-1 checkpoint with ``init_from``.

The reference lists ``modnet_ga`` twice in its L2 term, so its decoder-side LAE goes
unregularised. Both LAEs are regularised here, which is what the term is for;
``stage.l2_modules=[modnet_ga]`` reproduces the reference.

Teachers are loaded with :func:`~lae_vbr.models.registry.load_codec` (``weights_only``), frozen,
and held outside the module tree, so they never reach the checkpoint's state dict.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigError
from .models.composed import ComposedCodec
from .models.padding import pad_image
from .models.registry import load_codec
from .models.state_dict import CheckpointError, copy_matching_weights, read_checkpoint
from .module import CompressionModule

__all__ = ["LatentDistillationModule", "find_teachers"]

log = logging.getLogger(__name__)

HOW_TO_TRAIN = (
    "train them with `python src/train.py -m experiment=fixed_tcm lmbda.value=<λ,...>` and set "
    "stage.teachers to that sweep's folder or to a list of one checkpoint per λ"
)


def _stored_lmbdas(path: Path) -> list[float] | None:
    """The λ set a project checkpoint was trained for (None for other files)."""
    try:
        cfg = read_checkpoint(path, mmap=True).config
        return [float(v) for v in cfg["lmbda"]["values"]] if cfg else None
    except (CheckpointError, KeyError, TypeError):  # not a project checkpoint: not a teacher
        return None


def find_teachers(
    spec: str | PathLike | Sequence[Any] | None, lmbdas: Sequence[float]
) -> list[Path]:
    """One teacher checkpoint per λ, in the order of ``lmbdas``.

    ``spec`` is a list of paths (one per λ) or a folder, searched for ``checkpoints/last.ckpt``
    files of fixed-rate runs whose stored λ set is exactly one λ of ``lmbdas`` (the folder of a
    ``experiment=fixed_tcm`` sweep). Raises :class:`ConfigError` naming every missing λ.
    """
    found: list[Path | None] = [None] * len(lmbdas)
    problems: dict[int, str] = {}
    if isinstance(spec, str | PathLike):
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"stage.teachers={spec} is not a folder; {HOW_TO_TRAIN}")
        for path in sorted(folder.rglob("checkpoints/last.ckpt")):
            stored = _stored_lmbdas(path)
            for i, value in enumerate(lmbdas):
                if stored is not None and len(stored) == 1 and math.isclose(stored[0], value):
                    if found[i] is not None:
                        raise ConfigError(
                            f"several teachers for λ={value:g} in {folder}: {found[i]} and "
                            f"{path}; list one checkpoint per λ in stage.teachers"
                        )
                    found[i] = path
        problems = {i: f"no run for it in {folder}" for i, p in enumerate(found) if p is None}
    else:
        entries = list(spec or [])
        if entries and len(entries) != len(lmbdas):
            raise ConfigError(
                f"stage.teachers lists {len(entries)} checkpoints for {len(lmbdas)} λ values "
                f"{list(lmbdas)}; give one per λ, in the same order"
            )
        for i in range(len(lmbdas)):
            entry = entries[i] if entries else None
            if not entry:
                problems[i] = "not set"
            elif not Path(str(entry)).expanduser().is_file():
                problems[i] = f"{entry} not found"
            else:
                found[i] = Path(str(entry)).expanduser()
    if problems:
        missing = "; ".join(f"λ={lmbdas[i]:g} (index {i}): {why}" for i, why in problems.items())
        raise ConfigError(
            f"stage 1 needs a fixed-rate teacher for every λ; missing: {missing}. {HOW_TO_TRAIN}"
        )
    return [p for p in found if p is not None]


def _stage_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The stage's options, ``init_from`` and the λ values of a composed config."""
    values = (cfg.get("lmbda") or {}).get("values")
    return {
        "stage": dict(cfg.get("stage") or {}),
        "init_from": cfg.get("init_from"),
        "lmbdas": None if values is None else [float(v) for v in values],
    }


class LatentDistillationModule(CompressionModule):
    """Stage 1: frozen backbone, LAEs trained with latent distillation and L2 (see module doc).

    Config ``stage``: ``teachers`` (see :func:`find_teachers`), ``latent_weight``,
    ``l2_weight``, ``l2_modules``. Without ``init_from`` the backbone starts as the teacher of
    the largest λ, as in the paper (a frozen random backbone would make the stage pointless).
    """

    def __init__(
        self,
        *args: Any,
        stage: Mapping[str, Any] | None = None,
        init_from: str | None = None,
        lmbdas: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        """:class:`CompressionModule`'s arguments, and the stage's options (``stage``), the
        checkpoint the run starts from (``init_from``) and the λ values as configured."""
        super().__init__(*args, **kwargs)
        if stage is None:  # load_from_checkpoint: from the stored config
            stage, init_from, lmbdas = _stage_options(self.hparams["cfg"]).values()
        model = self.model
        if not isinstance(model, ComposedCodec) or model.modnet_ga is None:
            raise ConfigError("stage 1 trains LAEs: use a model/lae with the encoder-side LAE")
        if self.loss.quality_maps is not None:
            raise ConfigError(
                "stage 1 distils each sample's latent from the teacher of its one λ; train "
                "quality maps in stage 2 (loss=rd_quality_maps with experiment=vbr_stage2)"
            )
        stage = dict(stage)
        self.latent_weight = float(stage.get("latent_weight", 0.03))
        self.l2_weight = float(stage.get("l2_weight", 1e-4))
        # the λ values as configured (the loss holds them in float32)
        lmbdas = [float(v) for v in (lmbdas if lmbdas is not None else self.loss.lmbdas.tolist())]
        self._teachers = self._teachers_for(stage, lmbdas, bool(init_from))

        for part in model.backbone_modules():
            part.requires_grad_(False)
        self._l2_params = self._lae_parameters(stage.get("l2_modules", ["modnet_ga", "modnet_gs"]))
        if not init_from:  # then teachers exist (_teachers_for)
            top = max(range(len(lmbdas)), key=lmbdas.__getitem__)
            copied, _ = copy_matching_weights(model, self._teachers[top].state_dict())
            log.info(
                "backbone initialised from the λ=%g teacher (%d tensors)", lmbdas[top], len(copied)
            )

    @classmethod
    def arguments(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`CompressionModule.arguments` and the stage's: ``stage``, ``init_from`` and the
        λ values as configured."""
        return {**super().arguments(cfg), **_stage_options(cfg)}

    def _teachers_for(
        self, stage: Mapping[str, Any], lmbdas: list[float], has_init: bool
    ) -> tuple[nn.Module, ...]:
        """One frozen teacher per λ; none when distillation is off and init_from gives the
        backbone. A tuple: not submodules, so neither trained, moved by Lightning, nor saved."""
        if self.latent_weight == 0 and not stage.get("teachers"):
            if not has_init:
                raise ConfigError(
                    "stage 1 without teachers (stage.latent_weight=0) starts its frozen backbone "
                    "from a fixed-rate model: set init_from=<its checkpoint>"
                )
            return ()
        paths = find_teachers(stage.get("teachers"), lmbdas)
        return tuple(self._load_teacher(p, v) for p, v in zip(paths, lmbdas, strict=True))

    def _load_teacher(self, path: Path, lmbda: float) -> nn.Module:
        loaded = load_codec(path)
        if loaded.rate_axis.variable:
            raise ConfigError(f"teacher {path} for λ={lmbda:g} is a variable-rate model")
        if loaded.config and not (
            len(loaded.lmbdas) == 1 and math.isclose(loaded.lmbdas[0], lmbda)
        ):
            raise ConfigError(f"teacher {path} was trained for λ={loaded.lmbdas}, not {lmbda:g}")
        width = getattr(loaded.model, "latent_channels", None)
        if width is not None and int(width) != self.model.latent_channels:
            raise ConfigError(
                f"teacher {path} has {width} latent channels, the model "
                f"{self.model.latent_channels}: train the teachers with the same backbone"
            )
        return loaded.model.eval().requires_grad_(False)

    def _lae_parameters(self, names: Sequence[str]) -> list[nn.Parameter]:
        params = []
        for name in dict.fromkeys(names):
            if name not in ("modnet_ga", "modnet_gs"):
                raise ConfigError(f"stage.l2_modules: {name!r} is not an LAE (modnet_ga/modnet_gs)")
            lae = getattr(self.model, name)
            if lae is not None:
                params += [p for p in lae.parameters() if p.requires_grad]
        return params

    def on_fit_start(self) -> None:
        for teacher in self._teachers:
            teacher.to(self.device)

    @torch.no_grad()
    def teacher_latents(self, x: Tensor, lmbda_idx: Tensor) -> Tensor:
        """``g_a(x)`` of each sample's teacher (samples grouped by λ index)."""
        idx = lmbda_idx.reshape(-1).round().long()
        target: Tensor | None = None
        for k in idx.unique().tolist():
            sel = idx == k
            teacher = self._teachers[k]
            y = teacher.g_a(pad_image(x[sel], teacher.pad_multiple))
            if target is None:
                target = y.new_empty((x.shape[0], *y.shape[1:]))
            target[sel] = y
        assert target is not None
        return target

    def extra_loss_terms(self, out: Mapping, x: Tensor, lmbda_idx: Tensor) -> dict[str, Tensor]:
        l2 = sum((p.norm() for p in self._l2_params), torch.zeros((), device=x.device))
        terms = {"lae_l2": self.l2_weight * l2}
        if self._teachers:
            distill = F.mse_loss(out["y"], self.teacher_latents(x, lmbda_idx))
            terms["latent_distill"] = self.latent_weight * distill
        return terms
