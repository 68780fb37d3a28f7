"""bench/_reference_worker.py runs the shared cases (bench/model_cases.py) over its protocol, started exactly
as bench_models.Reference starts it (PYTHONPATH = the reference's site + bench/). stable-audio-tools is not
needed: a stand-in package in a temporary site gives a small autoencoder with its API (encoder, encode with
return_info, decode), and each reply is checked against the same model evaluated here by hand."""

import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_models  # noqa: E402

AUTOENCODER = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.nn import functional as F

    class AE(nn.Module):
        """Latent 64 x (samples / 2048), as SAO's: mean and scale from one strided conv, a KL, a transposed conv."""

        def __init__(self):
            super().__init__()
            self.encoder = nn.Conv1d(2, 128, 2048, stride=2048)
            self.decoder = nn.ConvTranspose1d(64, 2, 2048, stride=2048)

        def encode(self, x, return_info=False):
            mean, scale = self.encoder(x).chunk(2, dim=1)
            std = F.softplus(scale) + 1e-4
            z = mean + std * torch.randn_like(mean)
            kl = (mean.pow(2) + std.pow(2) - 2 * std.log() - 1).sum(1).mean()
            return (z, {"kl": kl}) if return_info else z

        def decode(self, z):
            return self.decoder(z)

    def create_autoencoder_from_config(config):
        return AE()
''')


@pytest.fixture
def site(tmp_path):
    pkg = tmp_path / "site" / "stable_audio_tools" / "models"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "autoencoders.py").write_text(AUTOENCODER)
    (pkg / "conditioners.py").write_text("NumberConditioner = None\n")
    (pkg / "diffusion.py").write_text("DiTWrapper = None\n")
    return tmp_path / "site"


def test_the_worker_runs_the_shared_cases_and_replies_what_the_model_computes(site, tmp_path):
    sys.path.insert(0, str(site))
    try:
        from stable_audio_tools.models.autoencoders import AE
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("stable_audio_tools.models.autoencoders", None)
    model = AE()
    inputs = {"audio": 0.3 * torch.randn(1, 2, 3 * 2048), "z": torch.randn(1, 64, 3), "seed": 7}
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save(inputs, tmp_path / "in.pt")
    ref = bench_models.Reference(site, 1)
    try:
        info = ref("setup_vae", config={}, weights=str(tmp_path / "w.pt"), inputs=str(tmp_path / "in.pt"))
        assert info["parameters"] == sum(p.numel() for p in model.parameters())
        assert info["missing_keys"] == [] and info["unexpected_keys"] == []
        ref("outputs", path=str(tmp_path / "out.pt"))
        out = torch.load(tmp_path / "out.pt")
        timed = ref("time", case="vae_train_step", reps=2)
        matrix = ref("time_vae", op="decode", frames=4, batch=2, seed=11, reps=3)
        ref("vae_matrix_outputs", frames=4, batch=1, seed=11, path=str(tmp_path / "m.pt"))
        saved = torch.load(tmp_path / "m.pt")
    finally:
        ref.close()
    with torch.no_grad():
        assert torch.allclose(out["encoder_raw"], model.encoder(inputs["audio"]), atol=1e-6)
        assert torch.allclose(out["decoded"], model.decode(inputs["z"]), atol=1e-6)
        torch.manual_seed(7)
        z, kl = model.encode(inputs["audio"], return_info=True)
        assert torch.allclose(out["z"], z, atol=1e-6) and torch.allclose(out["kl"], kl["kl"], atol=1e-5)
    torch.manual_seed(7)  # the training step: decode(encode(audio))^2 mean + 1e-4 KL, under the same seed
    z, info = model.encode(inputs["audio"], return_info=True)
    loss = model.decode(z).pow(2).mean() + 1e-4 * info["kl"]
    loss.backward()
    assert torch.allclose(out["loss"], loss.detach(), atol=1e-6)
    assert set(out["grads"]) == {k for k, _ in model.named_parameters()}
    for k, p in model.named_parameters():
        assert torch.allclose(out["grads"][k], p.grad, rtol=1e-4, atol=1e-7), k
    assert len(timed["seconds"]) == 2 and all(s > 0 for s in timed["seconds"])
    assert len(matrix["cpu"]) == len(matrix["wall"]) == 3
    audio, latents = bench_models.vae_inputs(4, 1, 11)  # the same inputs lafa's side draws from the seed
    with torch.no_grad():
        assert torch.allclose(saved["encoder_raw"], model.encoder(audio), atol=1e-6)
        assert torch.allclose(saved["decoded"], model.decode(latents), atol=1e-6)
    assert ref.deaths == []
