"""Samplers on a Gaussian toy: with the closed-form optimal network they recover the data distribution."""

import pytest
import torch

from lafa.diffusion.objectives import alpha_sigma
from lafa.diffusion.samplers import sample, time_grid

MU, STD = torch.tensor([1.5, -0.7, 0.0]), torch.tensor([0.5, 1.2, 0.25])


def optimal_network(objective: str):
    """Exact network output for data x0 ~ N(MU, diag(STD^2)): E[x0 | x_t] in closed form, then v or u."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = alpha_sigma(t[:, None, None].double(), objective)
        mu, var = MU[None, :, None].double(), STD[None, :, None].double() ** 2
        x0 = mu + a * var / (a**2 * var + s**2) * (x.double() - a * mu)
        if objective == "v":
            out = (a * x - x0) / s  # x0 = alpha x_t - sigma v
        else:
            out = (x - x0) / s  # x0 = x_t - t u
        return out.float()

    return fn


@pytest.mark.parametrize(
    "objective,sampler,steps,tol",
    [("rf", "euler", 100, 0.04), ("rf", "heun", 25, 0.025), ("v", "ddim", 100, 0.04), ("v", "dpmpp_2m", 25, 0.025)],
)
def test_sampler_recovers_gaussian(objective, sampler, steps, tol):
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(4000, 3, 1, generator=gen)
    x = sample(optimal_network(objective), noise, steps, objective, sampler)[..., 0]
    # the probability-flow ODE of a Gaussian is linear: noise z lands exactly on MU + STD z
    exact = MU + STD * noise[..., 0]
    assert ((x - exact).abs() / STD).max() < 3 * tol
    torch.testing.assert_close(x.mean(0), exact.mean(0), atol=tol * STD.max().item(), rtol=0)
    torch.testing.assert_close(x.std(0) / exact.std(0), torch.ones(3), atol=tol, rtol=0)
    # and that is the target distribution
    torch.testing.assert_close(exact.mean(0), MU, atol=0.06, rtol=0)


def test_second_order_samplers_converge_faster():
    noise = torch.randn(500, 3, 1, generator=torch.Generator().manual_seed(1))
    exact = MU + STD * noise[..., 0]
    for objective, first, second in (("rf", "euler", "heun"), ("v", "ddim", "dpmpp_2m")):
        err = {s: (sample(optimal_network(objective), noise, 20, objective, s)[..., 0] - exact).abs().mean()
               for s in (first, second)}
        assert err[second] < 0.5 * err[first], (objective, err)


def test_grid_and_sampler_checks():
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError):
        sample(optimal_network("v"), torch.zeros(1, 3, 1), 4, "v", "euler")
    with pytest.raises(ValueError):
        time_grid(0)
