"""Bit-identity with the VAE before its CPU inference engine became a separate path (issue 27).

tests/golden/vae_outputs.pt holds outputs of the VAE code of commit 7630da6, one thread (written by
`tests/models/golden/make_vae_outputs.py`, in the commit that added the file, 951c4b9):
the training path (train mode, with grad), the implicit eval/no_grad inference path under four option sets, and
encode_chunked/decode_chunked. Here, on the same seeded weights and inputs (`build` via tests.helpers.vae, `inputs`: that
script's), bit for bit:
- the plain model (`OobleckVAE`) equals today's training path, in train mode and now also in eval mode under
  no_grad (it no longer switches path);
- the explicit engine (`InferenceVAE(vae, **options)`) equals today's inference path with the same options;
- the engine agrees with the plain model within `vae_engine.TOLERANCE` where its windows overlap by more than
  twice the receptive-field reach (the SAO VAE at the defaults; the small VAE here reaches 19 / 21 frames).
One thread: oneDNN's results depend on the thread count in the last bits.
"""

from pathlib import Path

import pytest
import torch

from lafa.models.oobleck import OobleckVAE
from lafa.models.vae_engine import TOLERANCE, InferenceVAE
from tests.helpers.threads import one_thread  # noqa: F401  (autouse)
from tests.helpers.vae import rel, seeded_vae

GOLDEN = torch.load(Path(__file__).with_name("vae_outputs.pt"))
MODELS = {"small": dict(channels=8, c_mults=(1, 2), strides=(2, 4), latent_dim=8),
          "sao": dict(channels=4, latent_dim=8)}  # SAO strides and c_mults, 4 base channels
FRAMES = {"small": 300, "sao": 3}  # latent frames of the clips; small: longer than a 256-frame chunk
CONFIGS = {  # the options given to today's `configure_inference`, now to `InferenceVAE`
    "default": {},
    "engine_all": dict(winograd_min_channels=8, tile_elements=8 * 200, chunk_frames=64, overlap_frames=24),
    "plain_layout": dict(channels_last=False, winograd_tile=None, fused_snake=False, chunk_frames=None),
    "chunk_small_overlap": dict(chunk_frames=40, overlap_frames=8),
}
CHUNKED = (40, 20)  # encode_chunked / decode_chunked (chunk_size, overlap)


def build(name: str) -> OobleckVAE:
    return seeded_vae(**MODELS[name])


def inputs(name: str, vae: OobleckVAE) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    frames = FRAMES[name]
    audio = torch.randn(1, 2, frames * vae.downsampling_ratio + 5, generator=g)  # trailing samples short of a frame
    z = torch.randn(1, vae.latent_dim, frames, generator=g)
    return audio, z


def _plain_outputs(vae: OobleckVAE, audio: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    zs, kl = vae.encode(audio)
    return {"encode": zs, "kl": kl, "encode_mean": vae.encode_mean(audio), "decode": vae.decode(z),
            "encode_chunked": vae.encode_chunked(audio, *CHUNKED), "decode_chunked": vae.decode_chunked(z, *CHUNKED)}


@pytest.mark.parametrize("name", MODELS)
def test_plain_model_is_todays_training_path_in_every_mode(name):
    vae = build(name)
    gold = GOLDEN[name]
    assert sum(p.double().sum() for p in vae.state_dict().values()).item() == gold["state_sum"]
    audio, z = inputs(name, vae)
    with_grad = _plain_outputs(vae.train(), audio, z)  # records gradients
    assert with_grad["decode"].requires_grad
    with torch.no_grad():
        eval_no_grad = _plain_outputs(vae.eval(), audio, z)  # no switch to another path any more
    for outputs in (with_grad, eval_no_grad):
        for key, value in outputs.items():
            assert torch.equal(value, gold[f"train_{key}"]), key


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("config", CONFIGS)
def test_engine_is_todays_inference_path(name, config):
    vae = build(name)
    gold = GOLDEN[name]
    audio, z = inputs(name, vae)
    engine = InferenceVAE(vae, **CONFIGS[config])
    with torch.no_grad():
        enc, dec = engine.encode_mean(audio), engine.decode(z)
        assert torch.equal(enc, gold[f"infer_{config}_encode_mean"])
        assert torch.equal(dec, gold[f"infer_{config}_decode"])
        if config == "default":
            torch.manual_seed(3)
            zs, kl = engine.encode(audio)
            assert torch.equal(zs, gold["infer_default_encode"]) and torch.equal(kl, gold["infer_default_kl"])
    cfg = engine.config  # engine against the plain model: the stated tolerance, where the windows are exact
    if FRAMES[name] <= (cfg.chunk_frames or FRAMES[name]) or cfg.overlap_frames > 2 * vae.decoder_reach:
        assert rel(enc, gold["train_encode_mean"]) <= TOLERANCE
        assert rel(dec, gold["train_decode"]) <= TOLERANCE
    else:  # overlap inside the receptive field (the small VAE reaches 19 / 21 frames): approximate at the seams
        assert config != "plain_layout" and rel(dec, gold["train_decode"]) < 0.5


@pytest.mark.parametrize("name", MODELS)
def test_engine_chunks_as_todays_eval_mode_encode_chunked(name):
    """Today's encode_chunked / decode_chunked in eval mode under no_grad ran the inference path's kernels in
    (B, C, L) layout on windows: the engine with those windows and channels_last=False."""
    vae = build(name)
    audio, z = inputs(name, vae)
    engine = InferenceVAE(vae, chunk_frames=CHUNKED[0], overlap_frames=CHUNKED[1], channels_last=False)
    with torch.no_grad():
        assert torch.equal(engine.encode_mean(audio), GOLDEN[name]["infer_encode_chunked"])
        assert torch.equal(engine.decode(z), GOLDEN[name]["infer_decode_chunked"])


def test_engine_within_tolerance_with_exact_windows():
    """Every engine piece at once (Winograd, tiles, windows overlapping by 2 x reach + 1) on the small VAE."""
    vae = build("small")
    audio, z = inputs("small", vae)
    overlap = 2 * max(vae.encoder_reach, vae.decoder_reach) + 1
    engine = InferenceVAE(vae, winograd_min_channels=8, tile_elements=8 * 200, chunk_frames=3 * overlap,
                          overlap_frames=overlap)
    with torch.no_grad():
        assert rel(engine.encode_mean(audio), GOLDEN["small"]["train_encode_mean"]) <= TOLERANCE
        assert rel(engine.decode(z), GOLDEN["small"]["train_decode"]) <= TOLERANCE
