"""Exact Frechet distance of latents against the lab's known Gaussian, and its real-vs-real baseline
(docs/lab.md, "Exact FD").

The unit is a window of `frames_per_vector` (w) consecutive frames of all C channels, ordered (channel, frame)
as a (C, w) window flattens; its true law is N(0, K_w), K_w = sum_k lam_k (u_k u_k^T) kron T_k[:w, :w]. Only
the model's side is estimated (`lafa.metrics.frechet.gaussian_stats`); `fd_baseline` measures that estimator's
bias (real draws of the same count), `oracle_fd` the sampler's own error (the exact optimal denoiser through
lafa's sampler from the same noise), so model FD - oracle FD is what the network still has to learn.
"""

from __future__ import annotations

import numpy as np
import torch

from lafa.diffusion.samplers import sample
from lafa.lab.floors import optimal_prediction
from lafa.lab.spec import GaussianLatentSpec
from lafa.metrics.frechet import frechet_distance, gaussian_stats


def window_covariance(spec: GaussianLatentSpec, frames_per_vector: int = 1) -> np.ndarray:
    """K_w (C w, C w): the true covariance of one flattened (C, w) window."""
    u = spec.basis_matrix
    informative = (u[:, ~spec.white] * spec.eigenvalues[~spec.white]) @ u[:, ~spec.white].T
    white = (u[:, spec.white] * spec.eigenvalues[spec.white]) @ u[:, spec.white].T
    w = frames_per_vector
    return np.kron(informative, spec.temporal_covariance(w)) + np.kron(white, np.eye(w))


def window_vectors(latents: torch.Tensor, frames_per_vector: int = 1) -> np.ndarray:
    """(B, C, N) -> (B * (N // w), C w): every clip's non-overlapping windows, flattened (channel, frame)."""
    w = frames_per_vector
    wins = latents.detach().double().cpu().unfold(-1, w, w)  # (B, C, N // w, w)
    return wins.permute(0, 2, 1, 3).flatten(2).flatten(0, 1).numpy()


def exact_fd(latents: torch.Tensor, spec: GaussianLatentSpec, frames_per_vector: int = 1) -> float:
    """FD between the Gaussian fitted to these latents' windows (B, C, N) and the true N(0, K_w)."""
    mu, sigma = gaussian_stats(window_vectors(latents, frames_per_vector))
    truth = window_covariance(spec, frames_per_vector)
    return frechet_distance(mu, sigma, np.zeros(len(truth)), truth)


def gaussian_fd(spec: GaussianLatentSpec, other: GaussianLatentSpec, frames_per_vector: int = 1) -> float:
    """FD between two lab distributions' window laws (closed form: both sides exact)."""
    a, b = window_covariance(spec, frames_per_vector), window_covariance(other, frames_per_vector)
    return frechet_distance(np.zeros(len(a)), a, np.zeros(len(b)), b)


def fd_baseline(spec: GaussianLatentSpec, clips: int, frames_per_vector: int = 1, draws: int = 8,
                seed: int = 0) -> tuple[float, float]:
    """(mean, std) over `draws` of the exact FD of `clips` real latents: what a perfect model scores with as many
    samples (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    fds = np.array([exact_fd(spec.sample(clips, gen), spec, frames_per_vector) for _ in range(draws)])
    return float(fds.mean()), float(fds.std(ddof=1)) if draws > 1 else 0.0


def oracle_fd(spec: GaussianLatentSpec, noise: torch.Tensor, steps: int, objective: str, sampler: str | None = None,
              latent_scale: float = 1.0, frames_per_vector: int = 1) -> float:
    """Exact FD of the optimal denoiser's samples: lafa's `sample` from `noise` (B, C, N) (the DiT's scaled space)
    in `steps` steps, multiplied back by latent_scale, as `DitStage.sample_latents` does with its network."""
    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # t (B,): one time for the whole batch
        return optimal_prediction(spec, x, float(t.flatten()[0]), objective, latent_scale)

    z = sample(fn, noise.double(), steps, objective, sampler) * latent_scale
    return exact_fd(z, spec, frames_per_vector)
