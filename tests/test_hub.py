"""Models by Hub repo id, from a huggingface_hub cache laid out here exactly as huggingface_hub writes it
(`models--org--name/{blobs,refs,snapshots}`, snapshot files as relative links to blobs), with HF_HUB_OFFLINE=1:
Stable Audio Open's own files (model_config.json + a random-weight SAO-layout model.safetensors) as the VAE, a
lafa bundle by id, a LAFA stage whose vae_ckpt is the repo id, and `lafa push` stopped at the request it makes.
Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from lafa.checkpoints import CHECKPOINT_CONFIG_KEY
from lafa.errors import USER_ERROR_EXIT, LafaUserError
from lafa.models.oobleck import OobleckVAE

SAO_ID = "stabilityai/stable-audio-open-1.0"
REVISION = "ab5ab6ba0ab1ab2ab3ab4ab5ab6ab7ab8ab9aba0"  # a commit hash, as the cache names snapshots
TINY = dict(in_channels=2, channels=4, c_mults=[1, 2], strides=[2, 4], latent_dim=8)


def sao_model_config(vae: dict) -> dict:
    """Stable Audio Open 1.0's model_config.json (structure and values as published), with the autoencoder's sizes
    replaced by `vae`'s so the weights stay small."""
    enc = {"in_channels": vae["in_channels"], "channels": vae["channels"], "c_mults": vae["c_mults"],
           "strides": vae["strides"], "latent_dim": 2 * vae["latent_dim"], "use_snake": True}
    dec = {"out_channels": vae["in_channels"], "channels": vae["channels"], "c_mults": vae["c_mults"],
           "strides": vae["strides"], "latent_dim": vae["latent_dim"], "use_snake": True, "final_tanh": False}
    number = {"min_val": 0, "max_val": 512}
    return {
        "model_type": "diffusion_cond", "sample_size": 2097152, "sample_rate": 44100, "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
                "encoder": {"type": "oobleck", "config": enc}, "decoder": {"type": "oobleck", "config": dec},
                "bottleneck": {"type": "vae"}, "latent_dim": vae["latent_dim"],
                "downsampling_ratio": 8, "io_channels": 2}},
            "conditioning": {"configs": [
                {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 128}},
                {"id": "seconds_start", "type": "number", "config": number},
                {"id": "seconds_total", "type": "number", "config": number}], "cond_dim": 768},
            "diffusion": {"cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                          "global_cond_ids": ["seconds_start", "seconds_total"], "type": "dit",
                          "config": {"io_channels": 64, "embed_dim": 1536, "depth": 24, "num_heads": 24,
                                     "cond_token_dim": 768, "global_cond_dim": 1536, "project_cond_tokens": False,
                                     "transformer_type": "continuous_transformer"}},
            "io_channels": 64},
        "training": {"use_ema": True},
    }


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Lay `files` (name -> local file) into `cache` as huggingface_hub does: blobs named by content hash,
    refs/main holding the revision, snapshots/<revision>/<name> a relative link to the blob."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once at import: set where it is read
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def sao(offline_cache, tmp_path) -> OobleckVAE:
    """SAO's files for SAO_ID in the cache: the VAE under pretransform.model., beside DiT and conditioner tensors."""
    torch.manual_seed(0)
    vae = OobleckVAE(**TINY).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    state = {f"pretransform.model.{k}": v.contiguous() for k, v in vae.state_dict().items()}
    state["model.model.transformer.layers.0.self_attn.to_qkv.weight"] = torch.randn(3, 3)
    state["conditioner.conditioners.seconds_total.embedder.embedding.1.weight"] = torch.randn(2, 2)
    src = tmp_path / "src"
    src.mkdir()
    save_file(state, str(src / "model.safetensors"))
    (src / "model_config.json").write_text(json.dumps(sao_model_config(TINY), indent=4))
    cache_repo(offline_cache, SAO_ID, {"model_config.json": src / "model_config.json",
                                       "model.safetensors": src / "model.safetensors"})
    return vae


def test_sao_loads_by_repo_id_offline(sao):
    from lafa.models.autoencoder import VaeAutoencoder
    from lafa.stages.loading import load_autoencoder

    ae = load_autoencoder(SAO_ID)
    assert isinstance(ae, VaeAutoencoder) and ae.latent_dim == TINY["latent_dim"] and ae.downsampling_ratio == 8
    for k, v in sao.state_dict().items():
        assert torch.equal(ae.vae.state_dict()[k], v), k
    audio = 0.1 * torch.randn(1, 2, 64)
    torch.testing.assert_close(ae.encode(audio), sao.encode_mean(audio), rtol=0, atol=1e-4)


def test_published_sao_config_reads_as_sao_vae(tmp_path):
    """The published sizes (channels 128, c_mults 1-16, strides 2-8, latent 64) give OobleckVAE's SAO defaults."""
    from lafa.hub import sao_vae_arguments

    sao_sizes = dict(in_channels=2, channels=128, c_mults=[1, 2, 4, 8, 16], strides=[2, 4, 4, 8, 8], latent_dim=64)
    (tmp_path / "model_config.json").write_text(json.dumps(sao_model_config(sao_sizes)))
    args = sao_vae_arguments(tmp_path)
    assert args == dict(in_channels=2, channels=128, c_mults=(1, 2, 4, 8, 16), strides=(2, 4, 4, 8, 8),
                        latent_dim=64, sample_rate=44100, use_snake=True, final_tanh=False)


def test_lafa_stage_trains_on_sao_named_by_id(sao):
    from lafa.stages.lafa import LafaStage

    stage = LafaStage(vae_ckpt=SAO_ID, model={"preset": "tiny", "encoder_dim": 16, "decoder_dim": 16,
                                              "encoder_depth": 1, "decoder_depth": 1})
    assert torch.equal(stage.vae.decoder.layers[0].weight_v, sao.decoder.layers[0].weight_v)


def test_a_bundle_loads_by_repo_id_offline(offline_cache, tmp_path):
    from lafa.bundles.write import export_bundle
    from lafa.stages.pretrained import from_pretrained
    from lafa.stages.vae import VaeStage

    torch.manual_seed(1)
    args = {"model": {"preset": "tiny", **TINY}}
    stage = VaeStage(**args)
    ckpt = tmp_path / "vae.ckpt"
    config = {"model": {"class_path": "lafa.stages.vae.VaeStage", "init_args": args}}
    torch.save({"state_dict": stage.state_dict(), "global_step": 3, CHECKPOINT_CONFIG_KEY: yaml.safe_dump(config)},
               ckpt)
    bundle = export_bundle(ckpt, tmp_path / "tiny-vae")
    cache_repo(offline_cache, "me/tiny-vae", {n: bundle / n for n in ("config.json", "model.safetensors", "README.md")})
    ae = from_pretrained("me/tiny-vae")
    audio = 0.1 * torch.randn(1, 2, 64)
    with torch.no_grad():
        expected = stage.as_autoencoder()
        assert torch.equal(ae.decode(ae.encode(audio)), expected.decode(expected.encode(audio)))


def test_uncached_repo_id_offline_is_one_line(offline_cache, lafa_cli, tmp_path):
    from lafa.stages.loading import load_autoencoder

    with pytest.raises(LafaUserError, match="me/absent: not a file or folder here, and no lafa bundle .* in the "
                                            "huggingface_hub cache \\(HF_HUB_OFFLINE=1\\)"):
        load_autoencoder("me/absent")
    (tmp_path / "x.tar").write_bytes(b"")  # a shard that exists: encode checks its shards before the model
    code, lines = lafa_cli("encode", "--ckpt_path", "me/absent", "--shards", tmp_path / "x.tar", "--out", tmp_path / "o")
    assert code == USER_ERROR_EXIT and lines[0].startswith("lafa encode: error: me/absent: not a file or folder")


def test_push_makes_one_upload_request(offline_cache, tmp_path, monkeypatch, lafa_cli):
    """`lafa push` creates the repo and uploads the folder: the test stops at those requests."""
    from huggingface_hub import HfApi

    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"format": "lafa-bundle", "version": 1, "kind": "vae"}))
    (bundle / "model.safetensors").write_bytes(b"x")
    (bundle / "README.md").write_text("card")
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs))
        return "https://huggingface.co/me/tiny/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    code, _ = lafa_cli("push", "--bundle", bundle, "--repo_id", "me/tiny", "--private", "true")
    assert code == 0
    assert calls == [("create_repo", "me/tiny", {"private": True, "exist_ok": True, "repo_type": "model"}),
                     ("upload_folder", {"repo_id": "me/tiny", "folder_path": str(bundle), "repo_type": "model",
                                        "commit_message": "lafa bundle b"})]
    code, lines = lafa_cli("push", "--bundle", tmp_path, "--repo_id", "me/tiny")
    assert code == USER_ERROR_EXIT and lines == [
        f"lafa push: error: --bundle {tmp_path}: not a lafa bundle (no config.json of format lafa-bundle); write one "
        "with `lafa export --ckpt_path X --out DIR` and push DIR"]
    assert len(calls) == 2


@pytest.fixture
def lafa_cli(capsys):
    from lafa.cli import main

    def run(*args) -> tuple[int, list[str]]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        return code, [line for line in err.splitlines() if line.startswith("lafa ")]

    return run
