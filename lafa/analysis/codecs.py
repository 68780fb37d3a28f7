"""Audio autoencoders of Hugging Face `transformers` (EncodecModel, DacModel) behind lafa's Autoencoder interface,
loaded from a local directory (`save_pretrained` / a downloaded model folder), so `lafa analyze` ranks a codec's
latents beside mel, the VAE and LAFA.

Which latent (`pre_quant` or `quantized`) and how Encodec's `normalize` is honoured: docs/analysis.md
(`--codec_latent`). Both latents have `hidden_size` channels at the codec's hop length; decode returns the
normalised level.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import torch
from torch import nn

CODEC_TYPES = ("encodec", "dac")
CodecLatent = Literal["pre_quant", "quantized"]


def is_transformers_codec(path: str | Path) -> bool:
    """A directory with a transformers config.json."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


class TransformersCodec(nn.Module):
    """EncodecModel or DacModel as an Autoencoder: encode (B, io, S) -> (B, hidden_size, S // hop_length)."""

    def __init__(self, model: nn.Module, latent: CodecLatent = "pre_quant") -> None:
        super().__init__()
        config = model.config
        kind = config.model_type  # encodec or dac: load_transformers_codec reads no other
        self.model, self.kind, self.latent = model.eval(), kind, latent
        self.sample_rate = int(config.sampling_rate)
        self.io_channels = int(getattr(config, "audio_channels", 1))  # DAC is mono
        self.latent_dim = int(config.hidden_size)
        ratios = config.upsampling_ratios if kind == "encodec" else config.downsampling_ratios
        self.downsampling_ratio = int(math.prod(ratios))
        self.normalize = bool(getattr(config, "normalize", False))

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, io_channels, S) -> (B, hidden_size, S // downsampling_ratio)."""
        if audio.ndim != 3 or audio.shape[1] != self.io_channels:
            raise ValueError(f"{self.kind} expects audio (B, {self.io_channels}, S), got {tuple(audio.shape)}")
        frames = audio.shape[-1] // self.downsampling_ratio
        x = audio[..., : frames * self.downsampling_ratio]
        if self.normalize:
            x = x / (x.mean(1, keepdim=True).square().mean(2, keepdim=True).sqrt() + 1e-8)
        z = self.model.encoder(x)  # (B, hidden, frames)
        if self.latent == "quantized":
            if self.kind == "encodec":
                bandwidth = max(self.model.config.target_bandwidths)
                z = self.model.quantizer.decode(self.model.quantizer.encode(z, bandwidth))
            else:
                z = self.model.quantizer(z)[0]  # quantized_representation, all codebooks
        return z[..., :frames]

    @torch.no_grad()
    def decode(
        self, latent: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, hidden_size, N) -> (B, io_channels, N * downsampling_ratio); `steps`, `generator` unused (no flow)."""
        return self.model.decoder(latent)[..., : latent.shape[-1] * self.downsampling_ratio]


def load_transformers_codec(path: str | Path, latent: CodecLatent = "pre_quant") -> TransformersCodec:
    """A local transformers model directory (config.json + weights) -> TransformersCodec. Nothing is downloaded."""
    path = Path(path)
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type == "encodec":
        from transformers import EncodecModel as cls
    elif model_type == "dac":
        from transformers import DacModel as cls  # transformers >= 4.45 (pyproject.toml)
    else:
        raise ValueError(f"{path}: model_type {model_type!r} is not an audio autoencoder lafa reads {CODEC_TYPES}")
    return TransformersCodec(cls.from_pretrained(str(path), local_files_only=True), latent)
