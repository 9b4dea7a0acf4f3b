"""Evaluate codecs: ``python src/eval.py ckpt_path=PATH [study=NAME] [key=value ...]``.

The default study (``study=rd``) measures real bitstream rate, PSNR and MS-SSIM over a λ grid on
a test set, classical codecs in the same run, an R-D plot and BD-rates against published anchors
(``conf/eval.yaml``). Each option of the ``study`` group names the function that runs it.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.utils import get_method
from omegaconf import DictConfig

from lae_vbr.config import register_resolvers, with_path_hint
from lae_vbr.errors import LaeVbrError
from lae_vbr.heap import keep_freed_memory

register_resolvers()
log = logging.getLogger("eval")


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    study = get_method(cfg.study._target_)
    keep_freed_memory()  # coding image after image: freed maps reused, no page faults
    try:
        study(cfg)
    except (LaeVbrError, FileNotFoundError) as err:  # what to change, in one line
        log.error("%s", with_path_hint(str(err), cfg))
        sys.exit(1)


if __name__ == "__main__":
    main()
