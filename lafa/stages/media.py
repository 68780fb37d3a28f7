"""Audio, figures and images for whichever loggers a Trainer has: TensorBoard (the default) and Weights & Biases
(`configs/loggers/wandb.yaml`, docs/logging.md). Stages and callbacks log media through these three functions
only, so both loggers get the same clips and pictures under the same tags; other loggers (CSV) get none.

Audio is mono (a mix of the channels: TensorBoard's audio is one channel), float in [-1, 1]; images are (H, W)
in [0, 1]; figures are matplotlib Figures, rendered once to RGB for W&B.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger


def media_loggers(loggers: Iterable) -> list:
    """The loggers that take audio and images (TensorBoard and W&B), in the Trainer's order."""
    return [lg for lg in loggers or [] if isinstance(lg, (TensorBoardLogger, WandbLogger))]


def log_audio(loggers: Iterable, tag: str, audio: torch.Tensor, step: int, sample_rate: int) -> None:
    """One clip, (S,) or (C, S), as a mono mix to every media logger."""
    audio = audio.detach().float().cpu()
    mono = (audio.mean(dim=0) if audio.dim() == 2 else audio).clamp(-1, 1)[None]  # (1, S)
    for logger in media_loggers(loggers):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_audio(tag, mono, step, sample_rate=sample_rate)
        else:
            logger.log_audio(tag, [mono[0].numpy()], step=step, sample_rate=[sample_rate])


def log_image(loggers: Iterable, tag: str, image: torch.Tensor, step: int) -> None:
    """A (H, W) image in [0, 1] (row 0 at the top) to every media logger."""
    image = image.detach().float().cpu()
    for logger in media_loggers(loggers):
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HW")
        else:
            logger.log_image(tag, [(image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()], step=step)


def log_figure(loggers: Iterable, tag: str, figure, step: int) -> None:  # noqa: ANN001
    """A matplotlib Figure to every media logger (TensorBoard renders it itself; W&B gets its RGB pixels)."""
    targets = media_loggers(loggers)
    wandb = [lg for lg in targets if isinstance(lg, WandbLogger)]
    if wandb:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        for logger in wandb:
            logger.log_image(tag, [pixels], step=step)
    for logger in targets:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, step)  # closes the figure: after W&B's rendering
