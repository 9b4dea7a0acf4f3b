"""Evaluate codecs: ``python src/eval.py checkpoint=PATH [key=value ...]``.

Real bitstream rate, PSNR and MS-SSIM over a λ grid on a test set, classical codecs measured in
the same run, an R-D plot and BD-rates against published anchors (``conf/eval.yaml``).
"""

from __future__ import annotations

import logging
import sys
import warnings

import hydra
from omegaconf import DictConfig

from lae_vbr.codec.api import CodecError
from lae_vbr.config import register_resolvers
from lae_vbr.data import DataError
from lae_vbr.evaluation import EvalError, evaluate
from lae_vbr.models.state_dict import CheckpointError

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
register_resolvers()
log = logging.getLogger("eval")


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (EvalError, CheckpointError, CodecError, DataError, FileNotFoundError) as err:
        log.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
