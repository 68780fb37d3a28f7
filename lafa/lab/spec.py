"""A zero-mean Gaussian latent over (channels C, frames N) whose covariance is stated exactly (docs/lab.md,
"The distribution", derives every piece below).

x = sum_k sqrt(lam_k) u_k s_k^T: u_k (C,) is column k of an orthonormal channel basis U, s_k (N,) a
unit-variance Gaussian time series with temporal covariance T_k (one stationary T for the informative
components; T_k = I for `vae_like`'s near-noise tail). So K = cov(vec x) = sum_k lam_k (u_k u_k^T) kron T_k,
K_chan = U diag(lam) U^T, tr K = C N in every arm, and x -> U^T x V maps onto independent modes of variance
lam_k mu_j (or lam_k if white). Spectra `flat`, `power_law`, `vae_like`; bases `dct`, `permuted`, `rotated`;
temporal `ar1`, `power_law`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

SPECTRA = ("flat", "power_law", "vae_like")
BASES = ("dct", "permuted", "rotated")
TEMPORAL = ("ar1", "power_law")


def dct_basis(channels: int) -> np.ndarray:
    """Orthonormal DCT-II basis (C, C): column k is sqrt((2 - [k = 0]) / C) cos(pi (c + 1/2) k / C)."""
    c = np.arange(channels)[:, None] + 0.5
    k = np.arange(channels)[None, :]
    basis = np.cos(np.pi * c * k / channels) * math.sqrt(2.0 / channels)
    basis[:, 0] /= math.sqrt(2.0)
    return basis


def haar_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed orthogonal matrix (n, n): QR of a Gaussian matrix with R's diagonal signs fixed."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]


def autocovariance(kind: str, lags: np.ndarray, rho: float, exponent: float) -> np.ndarray:
    """Unit-variance stationary autocovariance c(|tau|) of the informative components."""
    lags = np.abs(lags).astype(np.float64)
    if kind == "ar1":
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"ar1 needs 0 <= rho < 1, got {rho}")
        return rho**lags
    if kind == "power_law":
        if exponent <= 0:
            raise ValueError(f"a power-law autocovariance needs exponent > 0, got {exponent}")
        return (1.0 + lags) ** -exponent
    raise ValueError(f"unknown temporal covariance {kind!r} (one of {TEMPORAL})")


@dataclass(frozen=True)
class GaussianLatentSpec:
    """Every knob of the lab's latent distribution (plain values, so YAML and jsonargparse can set them)."""

    channels: int = 64
    frames: int = 64
    spectrum: str = "power_law"
    exponent: float = 1.0  # a in lam_k ~ k^-a (power_law, vae_like)
    noise_channels: int = 8  # m: near-noise components of vae_like
    noise_level: float = 0.05  # their eigenvalue before normalisation (lam_1 = 1)
    basis: str = "dct"
    basis_seed: int = 0  # the permutation / rotation
    temporal: str = "ar1"
    rho: float = 0.9  # ar1
    temporal_exponent: float = 1.0  # power_law: c(tau) = (1 + |tau|)^-b

    def __post_init__(self) -> None:
        if self.spectrum not in SPECTRA:
            raise ValueError(f"unknown spectrum {self.spectrum!r} (one of {SPECTRA})")
        if self.basis not in BASES:
            raise ValueError(f"unknown basis {self.basis!r} (one of {BASES})")
        if self.channels < 2 or self.frames < 1:
            raise ValueError(f"need channels >= 2 and frames >= 1, got {self.channels}, {self.frames}")
        if self.spectrum == "vae_like" and not 0 < self.noise_channels < self.channels:
            raise ValueError(f"vae_like needs 0 < noise_channels < channels, got {self.noise_channels}")
        autocovariance(self.temporal, np.zeros(1), self.rho, self.temporal_exponent)  # validates the knobs

    # ---- channel axis --------------------------------------------------------------------------------------
    @cached_property
    def eigenvalues(self) -> np.ndarray:
        """Channel eigenvalues lam (C,), descending except vae_like's noise tail, summing to C."""
        k = np.arange(1, self.channels + 1, dtype=np.float64)
        if self.spectrum == "flat":
            lam = np.ones(self.channels)
        elif self.spectrum == "power_law":
            lam = k**-self.exponent
        else:
            lam = np.where(k <= self.channels - self.noise_channels, k**-self.exponent, self.noise_level)
        return lam * (self.channels / lam.sum())

    @cached_property
    def white(self) -> np.ndarray:
        """(C,) bool: components that are white in time (vae_like's noise tail)."""
        white = np.zeros(self.channels, dtype=bool)
        if self.spectrum == "vae_like":
            white[self.channels - self.noise_channels :] = True
        return white

    @cached_property
    def basis_matrix(self) -> np.ndarray:
        """U (C, C), orthonormal; column k is the channel pattern of eigen-component k."""
        u = dct_basis(self.channels)
        rng = np.random.default_rng(self.basis_seed)
        if self.basis == "permuted":
            return u[rng.permutation(self.channels)]
        if self.basis == "rotated":
            return haar_orthogonal(self.channels, rng) @ u
        return u

    @cached_property
    def channel_covariance(self) -> np.ndarray:
        """K_chan = U diag(lam) U^T (C, C): the covariance of one frame's channel vector."""
        u = self.basis_matrix
        return (u * self.eigenvalues) @ u.T

    # ---- time axis -----------------------------------------------------------------------------------------
    def temporal_covariance(self, frames: int | None = None) -> np.ndarray:
        """T (n, n) of the informative components over `frames` consecutive frames (default: all N)."""
        n = self.frames if frames is None else frames
        idx = np.arange(n)
        return autocovariance(self.temporal, idx[:, None] - idx[None, :], self.rho, self.temporal_exponent)

    @cached_property
    def _temporal_eigen(self) -> tuple[np.ndarray, np.ndarray]:
        mu, v = np.linalg.eigh(self.temporal_covariance())
        return np.clip(mu, 0.0, None), v

    @cached_property
    def _temporal_factor(self) -> torch.Tensor:
        """L^T (N, N) with L L^T = T, so a row of iid normals times it has covariance T."""
        mu, v = self._temporal_eigen
        return torch.from_numpy((v * np.sqrt(mu)) @ v.T)  # symmetric square root: L = L^T

    # ---- modes ---------------------------------------------------------------------------------------------
    @cached_property
    def mode_variances(self) -> np.ndarray:
        """(C, N): the variance of each independent mode of `to_modes`; their sum is C N."""
        mu, _ = self._temporal_eigen
        return self.eigenvalues[:, None] * np.where(self.white[:, None], 1.0, mu[None, :])

    def to_modes(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C, N) -> (..., C, N): U^T x V, coordinates in K's orthonormal eigenbasis (float64)."""
        u = torch.from_numpy(self.basis_matrix)
        v = torch.from_numpy(self._temporal_eigen[1])
        return u.T @ x.double() @ v

    def from_modes(self, y: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_modes`: (..., C, N) -> U y V^T."""
        u = torch.from_numpy(self.basis_matrix)
        v = torch.from_numpy(self._temporal_eigen[1])
        return u @ y.double() @ v.T

    # ---- sampling ------------------------------------------------------------------------------------------
    @cached_property
    def _channel_factor(self) -> torch.Tensor:
        """U diag(sqrt lam) (C, C)."""
        return torch.from_numpy(self.basis_matrix * np.sqrt(self.eigenvalues))

    def colour(self, z: torch.Tensor) -> torch.Tensor:
        """iid standard normals (..., C, N) -> latents (..., C, N) with covariance K (float64)."""
        z = z.double()
        timed = z @ self._temporal_factor  # s_k (..., C, N): rows with covariance T
        if self.white.any():
            white = torch.from_numpy(self.white)
            timed[..., white, :] = z[..., white, :]  # the white components keep their iid rows
        return self._channel_factor @ timed

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latents (n, C, N), float64."""
        z = torch.randn(n, self.channels, self.frames, generator=generator, dtype=torch.float64)
        return self.colour(z)
