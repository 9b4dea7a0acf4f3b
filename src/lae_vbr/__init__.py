"""lae-vbr: variable-rate learned image compression with Latent-domain Auto-Encoders."""

import warnings

__version__ = "0.1.0"

# CompressAI scripts a few helpers with torch.jit at import time, which recent PyTorch
# versions flag as deprecated on every start-up; it says nothing about this package.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
