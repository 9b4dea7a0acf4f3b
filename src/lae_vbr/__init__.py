"""lae-vbr: variable-rate learned image compression with Latent-domain Auto-Encoders."""

__version__ = "0.1.0"
