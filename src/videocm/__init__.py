"""videocm: consistency distillation of video diffusion models (VideoLCM, DCM) into 1-8 step students."""

__version__ = "0.1.0"
