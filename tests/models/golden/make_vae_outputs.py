"""Write tests/models/golden/vae_outputs.pt from the VAE code at commit 7630da6 (before the inference engine was
split out of lafa/models/oobleck.py): outputs of the training path and of the implicit eval/no_grad inference path
on fixed seeded weights and inputs. Run once at that commit; tests/models/test_vae_golden.py rebuilds the same
models and inputs (its `build` and `inputs` are copies of the ones below) and compares bit for bit.

    PYTHONPATH=. python tests/models/golden/make_vae_outputs.py
"""

import copy
from pathlib import Path

import torch

from lafa.models.oobleck import OobleckVAE

MODELS = {"small": dict(channels=8, c_mults=(1, 2), strides=(2, 4), latent_dim=8),
          "sao": dict(channels=4, latent_dim=8)}  # SAO strides and c_mults, 4 base channels
FRAMES = {"small": 300, "sao": 3}  # latent frames of the clips; small: longer than a 256-frame chunk


def build(name: str) -> OobleckVAE:
    torch.manual_seed(0)
    vae = OobleckVAE(**MODELS[name])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # no trivially unit gains / zero snake logs
        for pname, p in vae.named_parameters():
            if pname.endswith((".alpha", ".beta")):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif pname.endswith("weight_g"):
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
    return vae


def inputs(name: str, vae: OobleckVAE) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    frames = FRAMES[name]
    audio = torch.randn(1, 2, frames * vae.downsampling_ratio + 5, generator=g)  # trailing samples short of a frame
    z = torch.randn(1, vae.latent_dim, frames, generator=g)
    return audio, z


# inference-path configurations (today's `configure_inference` options) and the chunked calls
CONFIGS = {
    "default": {},
    "engine_all": dict(winograd_min_channels=8, tile_elements=8 * 200, chunk_frames=64, overlap_frames=24),
    "plain_layout": dict(channels_last=False, winograd_tile=None, fused_snake=False, chunk_frames=None),
    "chunk_small_overlap": dict(chunk_frames=40, overlap_frames=8),
}
CHUNKED = (40, 20)  # encode_chunked / decode_chunked (chunk_size, overlap)


def main() -> None:
    torch.set_num_threads(1)
    out = {}
    for name in MODELS:
        vae = build(name)
        audio, z = inputs(name, vae)
        r = {"state_sum": sum(p.double().sum() for p in vae.state_dict().values()).item()}
        vae.train()
        torch.manual_seed(3)
        zs, kl = vae.encode(audio)  # with grad: the training path
        r["train_encode"], r["train_kl"] = zs.detach(), kl.detach()
        r["train_encode_mean"] = vae.encode_mean(audio).detach()
        r["train_decode"] = vae.decode(z).detach()
        r["train_encode_chunked"] = vae.encode_chunked(audio, *CHUNKED).detach()
        r["train_decode_chunked"] = vae.decode_chunked(z, *CHUNKED).detach()
        for cname, options in CONFIGS.items():
            ev = copy.deepcopy(vae).eval()
            ev.configure_inference(**options)
            with torch.no_grad():
                r[f"infer_{cname}_encode_mean"] = ev.encode_mean(audio)
                r[f"infer_{cname}_decode"] = ev.decode(z)
                if cname == "default":
                    torch.manual_seed(3)
                    zs, kl = ev.encode(audio)
                    r["infer_default_encode"], r["infer_default_kl"] = zs, kl
                    r["infer_encode_chunked"] = ev.encode_chunked(audio, *CHUNKED)
                    r["infer_decode_chunked"] = ev.decode_chunked(z, *CHUNKED)
        out[name] = {k: v.clone().contiguous() if torch.is_tensor(v) else v for k, v in r.items()}
    path = Path(__file__).with_name("vae_outputs.pt")
    torch.save(out, path)
    print(path, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
