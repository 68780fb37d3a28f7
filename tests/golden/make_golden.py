"""Write tests/golden/outputs.pt: model outputs of lafa at commit 7630da6 (before the issue-27 redraw).

Run once on that commit (`python tests/golden/make_golden.py`); test_golden_outputs.py checks that today's code
gives the same tensors bit for bit from the same weights and inputs. Each entry stores the state dict, so the
test does not depend on how a model initialises, and `init_seed` so the test can check init separately.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lafa.diffusion.objectives import diffusion_loss
from lafa.diffusion.samplers import sample
from lafa.models.lafa import Lafa

OUT = Path(__file__).with_name("outputs.pt")
LAFA_ARGS = dict(latent_channels=16, lafa_channels=16, channel_group_size=4, encoder_dim=16, encoder_depth=2,
                 encoder_heads=2, decoder_dim=16, decoder_depth=2, decoder_heads=2)
LAFA_VARIANTS = {"flow": {}, "vit": {"decoder": "vit"}, "latent_site": {"mask_site": "latent"},
                 "absolute": {"positions": "absolute", "causal": False}}
DIT_ARGS = dict(io_channels=8, dim=32, depth=2, heads=2, text_dim=16, cond_dim=16, max_seconds=16.0)
DIT_KINDS = ("sao", "etta")
DECODE_STEPS = (1, 2, 3, 10)
SAMPLERS = {"rf": ("euler", "heun"), "v": ("dpmpp_2m", "ddim")}
SAMPLER_STEPS = (1, 3, 10)


def lafa_case(variant: str) -> dict:
    torch.manual_seed(0)
    model = Lafa(**LAFA_ARGS, **LAFA_VARIANTS[variant]).eval()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 16, 12, generator=g) * 2 + 0.5
    keep = torch.ones(3, 12, dtype=torch.bool)
    keep[1, 9:] = False
    model.input_normalizer.accumulate(z, keep)
    model.input_normalizer.commit()
    out = {"init_seed": 0, "state": {k: v.clone() for k, v in model.state_dict().items()}, "z": z, "keep": keep}
    with torch.no_grad():
        y = model.encode(z, keep)
        out["y"] = y
        out["mask"] = model.masker(3, torch.Generator().manual_seed(2))
        out["loss"] = model.loss(z, out["mask"], keep, torch.Generator().manual_seed(3))
        for k in DECODE_STEPS if variant != "vit" else (1,):
            out[f"decode_k{k}"] = model.decode(y, k, keep, torch.Generator().manual_seed(4))
    return out


def dit_case(kind: str) -> dict:
    from lafa.models.dit_etta import DiTETTA  # the two classes of 7630da6 (one `lafa.models.dit.DiT` since)
    from lafa.models.dit_sao import DiTSAO

    torch.manual_seed(0)
    model = {"sao": DiTSAO, "etta": DiTETTA}[kind](**DIT_ARGS).eval()
    with torch.no_grad():  # zero-initialised outputs would hide everything: perturb every weight
        g = torch.Generator().manual_seed(5)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    g = torch.Generator().manual_seed(6)
    inputs = dict(x=torch.randn(3, 8, 10, generator=g), t=torch.rand(3, generator=g),
                  text=torch.randn(3, 5, 16, generator=g), text_mask=torch.tensor([[1, 1, 1, 0, 0]] * 3).bool(),
                  seconds_start=torch.tensor([0.0, 1.0, 2.0]), seconds_total=torch.tensor([4.0, 5.0, 6.0]),
                  cond_drop=torch.tensor([False, True, False]), frame_keep=torch.ones(3, 10, dtype=torch.bool))
    inputs["frame_keep"][2, 7:] = False
    with torch.no_grad():
        output = model(**inputs)
    return {"init_seed": 0, "state": {k: v.clone() for k, v in model.state_dict().items()}, "inputs": inputs,
            "output": output}


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear field: the same function before and after, so sampler arithmetic is all that varies."""
    w = torch.linspace(-1.0, 1.0, x.shape[1])[None, :, None]
    return torch.tanh(w * x) + t[:, None, None] * x - 0.3 * x.roll(1, dims=1)


def sampler_cases() -> dict:
    noise = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(7))
    out = {"noise": noise}
    for objective, names in SAMPLERS.items():
        for name in names:
            for steps in SAMPLER_STEPS:
                out[f"{objective}/{name}/{steps}"] = sample(toy_model, noise, steps, objective, name)
    g = torch.Generator().manual_seed(8)
    x0, eps, t = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g), torch.rand(3, generator=g)
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[0, 4:] = False
    out["loss_inputs"] = (x0, eps, t, keep)
    for objective in SAMPLERS:
        out[f"loss/{objective}"] = diffusion_loss(toy_model, x0, t, eps, objective, keep)
    return out


def main() -> None:
    golden = {"lafa": {v: lafa_case(v) for v in LAFA_VARIANTS}, "dit": {k: dit_case(k) for k in DIT_KINDS},
              "samplers": sampler_cases()}
    torch.save(golden, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
