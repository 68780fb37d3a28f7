"""A ground-truth lab: Gaussian latents whose diffusability is known exactly (docs/lab.md, issue 23).

`spec` states the distribution (channel eigen-spectrum and basis, temporal covariance) and samples it;
`floors` gives the exact Bayes floor of the DiT's `v` and `rf` losses and the optimal denoiser; `locality`
the population values of lafa's alpha, LPI and their controls; `frechet` the exact Frechet distance of
generated latents against the truth, its real-vs-real baseline and the optimal denoiser's FD through lafa's
sampler. Pure numpy/torch (its Lightning callback lives in `lafa.stages.lab_callbacks`).
"""

from lafa.lab.floors import bayes_residual, loss_floor, loss_floors, optimal_prediction
from lafa.lab.frechet import exact_fd, fd_baseline, gaussian_fd, oracle_fd, window_covariance
from lafa.lab.locality import population_measures
from lafa.lab.spec import GaussianLatentSpec

__all__ = ["GaussianLatentSpec", "bayes_residual", "exact_fd", "fd_baseline", "gaussian_fd", "loss_floor",
           "loss_floors", "optimal_prediction", "oracle_fd", "population_measures", "window_covariance"]
