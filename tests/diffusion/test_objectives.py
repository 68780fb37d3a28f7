"""Objectives, t sampling, the padding-masked loss and classifier-free guidance."""

import math

import pytest
import torch

from lafa.diffusion.cfg import cfg_combine, drop_mask, guided
from lafa.diffusion.objectives import (
    alpha_sigma,
    diffusion_loss,
    masked_mse_per_example,
    masked_mse_pooled,
    noisy,
    predictions,
    sample_t,
    target,
)


@pytest.mark.parametrize("objective", ["v", "rf"])
def test_target_inverts_to_data_and_noise(objective):
    torch.manual_seed(0)
    x0, eps, t = torch.randn(4, 3, 5), torch.randn(4, 3, 5), torch.tensor([0.1, 0.4, 0.7, 0.95])
    x_t = noisy(x0, eps, t, objective)
    x0_hat, eps_hat = predictions(target(x0, eps, t, objective), x_t, t, objective)
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=1e-5)


def test_schedules_match_the_paper():
    t = torch.linspace(0, 1, 11)
    a, s = alpha_sigma(t, "v")
    torch.testing.assert_close(a, torch.cos(math.pi * t / 2))
    torch.testing.assert_close(a**2 + s**2, torch.ones(11))
    x0, eps = torch.ones(1, 1, 1), 2 * torch.ones(1, 1, 1)
    half = torch.tensor([0.5])
    torch.testing.assert_close(noisy(x0, eps, half, "rf"), torch.full((1, 1, 1), 1.5))
    torch.testing.assert_close(target(x0, eps, half, "rf"), torch.ones(1, 1, 1))  # eps - x0
    c = math.cos(math.pi / 4)
    torch.testing.assert_close(target(x0, eps, half, "v"), torch.full((1, 1, 1), c * 2 - c * 1))
    with pytest.raises(ValueError):
        alpha_sigma(t, "eps")


def test_t_samplers():
    gen = torch.Generator().manual_seed(0)
    u = sample_t(20000, "uniform", generator=gen)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    ln = sample_t(20000, "logit_normal", generator=gen)
    # P(t < sigmoid(1)) = Phi(1) for logit(t) ~ N(0, 1)
    assert abs((ln < torch.sigmoid(torch.tensor(1.0))).float().mean() - 0.8413) < 0.01
    with pytest.raises(ValueError):
        sample_t(3, "beta")


def test_loss_mask_ignores_padded_frames():
    torch.manual_seed(0)
    pred, tgt = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    loss = masked_mse_per_example(pred, tgt, mask)
    pred2 = pred.clone()
    pred2[0, :, 3:] += 100.0  # garbage on padded frames
    torch.testing.assert_close(masked_mse_per_example(pred2, tgt, mask), loss)
    torch.testing.assert_close(loss[0], ((pred[0, :, :3] - tgt[0, :, :3]) ** 2).mean())
    torch.testing.assert_close(loss[1], ((pred[1] - tgt[1]) ** 2).mean())
    # through the whole loss: a model that is wrong only on padded frames has zero loss
    x0, eps, t = torch.randn(2, 4, 6), torch.randn(2, 4, 6), torch.tensor([0.3, 0.8])

    def model(x_t, tt):
        out = target(x0, eps, tt, "v").clone()
        out[0, :, 3:] = 7.0
        return out

    torch.testing.assert_close(diffusion_loss(model, x0, t, eps, "v", mask), torch.zeros(2), atol=1e-6, rtol=0)


def test_cfg_combination_formula_and_guided_batch():
    c, u = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0])
    torch.testing.assert_close(cfg_combine(c, u, 7.0), u + 7.0 * (c - u))
    torch.testing.assert_close(cfg_combine(c, u, 1.0), c)
    torch.testing.assert_close(cfg_combine(c, u, 0.0), u)

    def model(x, t, cond_drop=None, text=None):
        # a toy whose output depends on the condition unless it is dropped
        return x * t[:, None] + torch.where(cond_drop[:, None], torch.zeros_like(text), text)

    x, t, text = torch.randn(3, 4), torch.rand(3), torch.randn(3, 4)
    out = guided(model, {"text": text}, 4.0)(x, t)
    cond = model(x, t, torch.zeros(3, dtype=torch.bool), text)
    uncond = model(x, t, torch.ones(3, dtype=torch.bool), text)
    torch.testing.assert_close(out, uncond + 4.0 * (cond - uncond))
    rate = drop_mask(20000, 0.1, generator=torch.Generator().manual_seed(0)).float().mean()
    assert abs(rate - 0.1) < 0.01


def test_the_two_masked_losses_weigh_padded_clips_as_documented():
    """per_example: every example weighs the same; pooled: every real frame weighs the same (closed forms)."""
    pred, tgt = torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)
    pred[0] += 1.0  # example 0 has error 1 on every element, example 1 none
    keep = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)  # 1 real frame vs 4
    assert masked_mse_per_example(pred, tgt, keep).tolist() == [1.0, 0.0]  # batch mean 0.5
    assert masked_mse_pooled(pred, tgt, keep).item() == pytest.approx(1 / 5)  # 1 of 5 real frames is wrong
    pred[0, :, 1:] += 100.0  # padding never counts
    assert masked_mse_pooled(pred, tgt, keep).item() == pytest.approx(1 / 5)
