"""Evaluate codecs: ``python src/eval.py checkpoint=PATH [study=NAME] [key=value ...]``.

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

from lae_vbr.codec.api import CodecError
from lae_vbr.config import register_resolvers
from lae_vbr.data import DataError
from lae_vbr.errors import LaeVbrError
from lae_vbr.models.state_dict import CheckpointError

register_resolvers()
log = logging.getLogger("eval")

#: Errors shown as one line. LaeVbrError covers every error of this package (EvalError and
#: StudyError among them); CheckpointError, CodecError and DataError are listed until they
#: derive from it too.
ONE_LINE_ERRORS = (LaeVbrError, CheckpointError, CodecError, DataError, FileNotFoundError)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    study = get_method(cfg.study._target_)
    try:
        study(cfg)
    except ONE_LINE_ERRORS as err:
        log.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
