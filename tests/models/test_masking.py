"""ChannelSpanMasker (paper Sec. 4.1, 5.4): structure of every draw, and the laws of many draws.

Statistical tests use a fixed seed and tolerances of at least 4 binomial standard deviations.
"""

from __future__ import annotations

import math

import pytest
import torch

from lafa.models.masking import ChannelSpanMasker


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D bool tensor as (start, length), by a plain loop."""
    runs, start = [], None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


@pytest.mark.parametrize(
    "channels,ratio,max_spans,mode",
    [(64, 1.0, 4, "uniform"), (64, 0.5, 8, "fixed"), (17, 0.8, 3, "uniform"), (8, 1.0, 16, "uniform")],
)
def test_every_draw_is_a_valid_span_mask(channels: int, ratio: float, max_spans: int, mode: str) -> None:
    masker = ChannelSpanMasker(channels, ratio, max_spans, length_mode=mode, p_all=0.0)
    draw = masker.draw(2000, _gen(1))
    max_length = math.floor(ratio * channels)
    for b in range(2000):
        length, count = int(draw.length[b]), int(draw.count[b])
        assert 0 <= length <= max_length and 1 <= count <= max_spans
        if mode == "fixed":
            assert length == max_length
        spans = [(int(s), int(n)) for s, n in zip(draw.starts[b], draw.lengths[b], strict=True) if n > 0]
        cap = math.ceil(length / count) if length else 0
        assert len(spans) == min(count, length) <= max_spans  # count <= m, every span non-empty
        assert sum(n for _, n in spans) == length  # lengths sum to the masked length
        assert all(1 <= n <= cap for _, n in spans)  # each at most ceil(L / M)
        reference = torch.zeros(channels, dtype=torch.bool)
        for s, n in spans:  # contiguous, inside the channel range, non-overlapping
            assert 0 <= s and s + n <= channels
            assert not reference[s : s + n].any()
            reference[s : s + n] = True
        assert torch.equal(draw.masked[b], reference)
        # the mask's maximal runs are unions of adjacent spans: never more runs than spans
        assert len(_runs(draw.masked[b])) <= len(spans)


def test_uniform_length_law() -> None:
    """Sec. 5.4: the masked length is U{0..floor(rho C)}; the span count is U{1..m}."""
    channels, ratio, max_spans, n = 20, 0.6, 5, 30000
    draw = ChannelSpanMasker(channels, ratio, max_spans, p_all=0.0).draw(n, _gen(2))
    max_length = 12
    freq = torch.bincount(draw.masked.sum(dim=1), minlength=channels + 1).double() / n
    expected = 1.0 / (max_length + 1)
    tol = 4.5 * math.sqrt(expected * (1 - expected) / n)  # ~0.0069
    assert (freq[: max_length + 1] - expected).abs().max() < tol
    assert freq[max_length + 1 :].sum() == 0
    count_freq = torch.bincount(draw.count, minlength=max_spans + 1)[1:].double() / n
    assert (count_freq - 1 / max_spans).abs().max() < 4.5 * math.sqrt(0.2 * 0.8 / n)


def test_per_channel_probability_single_span_matches_closed_form() -> None:
    """m = 1: one span of length L ~ U{0..L_mask} at a uniform start in 0..C-L covers channel c with
    probability mean_L (#starts covering c) / (C - L + 1); its channel average is E[L] / C = L_mask / (2C)."""
    channels, ratio, n = 12, 0.75, 60000
    max_length = 9
    mask = ChannelSpanMasker(channels, ratio, max_spans=1, p_all=0.0)(n, _gen(3)).double()
    closed = torch.zeros(channels, dtype=torch.float64)
    for length in range(max_length + 1):
        for c in range(channels):
            if length:
                covering = min(c, channels - length) - max(0, c - length + 1) + 1
                closed[c] += covering / (channels - length + 1) / (max_length + 1)
    assert closed.mean().item() == pytest.approx(max_length / 2 / channels)
    tol = 4.5 * math.sqrt(0.25 / n)  # ~0.0092
    assert (mask.mean(dim=0) - closed).abs().max() < tol


def test_per_channel_probability_many_spans() -> None:
    """Any m: the channel-average masking probability is E[L]/C; the law is mirror-symmetric in c."""
    channels, max_spans, n = 32, 6, 40000
    masker = ChannelSpanMasker(channels, ratio=1.0, max_spans=max_spans, p_all=0.0)
    per_channel = masker(n, _gen(4)).double().mean(dim=0)
    tol = 4.5 * math.sqrt(0.25 / n)
    assert per_channel.mean().item() == pytest.approx(channels / 2 / channels, abs=tol / math.sqrt(channels))
    assert (per_channel - per_channel.flip(0)).abs().max() < 2 * tol


def test_pointwise_mode_masks_every_channel_alike() -> None:
    """span=False (Table 5 without span mask): L scattered channels, each masked with probability E[L]/C."""
    channels, n = 16, 30000
    masker = ChannelSpanMasker(channels, ratio=1.0, max_spans=4, p_all=0.0, span=False)
    draw = masker.draw(n, _gen(5))
    assert torch.equal(draw.masked.sum(dim=1), draw.length)
    expected = 0.5  # E[L] / C with L ~ U{0..16}
    assert (draw.masked.double().mean(dim=0) - expected).abs().max() < 4.5 * math.sqrt(0.25 / n)
    # scattered: a uniform L-subset of C channels has L (C - L + 1) / C runs on average
    mask = draw.masked.long()
    runs = mask[:, 0] + (mask[:, 1:] * (1 - mask[:, :-1])).sum(dim=1)
    expected_runs = sum(k * (channels - k + 1) / channels for k in range(channels + 1)) / (channels + 1)
    assert runs.double().mean().item() == pytest.approx(expected_runs, abs=0.05)


def test_p_all_masks_everything_with_its_probability() -> None:
    channels, n, p_all = 24, 20000, 0.3
    draw = ChannelSpanMasker(channels, ratio=0.5, max_spans=3, p_all=p_all).draw(n, _gen(6))
    full = draw.masked.all(dim=1)
    assert torch.equal(full, draw.all)  # with rho < 1 only the p_all draw masks everything
    assert abs(full.double().mean().item() - p_all) < 4.5 * math.sqrt(p_all * (1 - p_all) / n)
    # with rho = 1 and no p_all, a full mask comes only from L = C: probability 1 / (C + 1)
    full = ChannelSpanMasker(channels, 1.0, 3, p_all=0.0)(n, _gen(7)).all(dim=1).double().mean().item()
    assert abs(full - 1 / 25) < 4.5 * math.sqrt(0.04 * 0.96 / n)


def test_seeded_draws_are_reproducible() -> None:
    masker = ChannelSpanMasker(64, 1.0, 4, p_all=0.1)
    assert torch.equal(masker(32, _gen(11)), masker(32, _gen(11)))
    assert not torch.equal(masker(32, _gen(11)), masker(32, _gen(12)))


def test_ratio_zero_without_p_all_masks_nothing() -> None:
    """The masking-off control: rho = 0 and p_all = 0 never mask a channel, in either mode."""
    for mode in ("uniform", "fixed"):
        for span in (True, False):
            draw = ChannelSpanMasker(16, 0.0, 4, length_mode=mode, p_all=0.0, span=span).draw(500, _gen(13))
            assert not draw.masked.any() and not draw.length.any()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="ratio"):
        ChannelSpanMasker(64, ratio=-0.1)
    with pytest.raises(ValueError, match="ratio"):
        ChannelSpanMasker(64, ratio=1.5)
    with pytest.raises(ValueError, match="length_mode"):
        ChannelSpanMasker(64, length_mode="gaussian")
    with pytest.raises(ValueError, match="max_spans"):
        ChannelSpanMasker(64, max_spans=0)


# ---- prefix masking (DC-AE 1.5, arXiv 2508.00413) ------------------------------------------------------------


def _kept_prefix(mask: torch.Tensor) -> torch.Tensor:
    """Kept prefix length of each row of a (B, C) prefix mask, by counting the unmasked channels."""
    return (~mask).sum(dim=1)


@pytest.mark.parametrize("channels,ratio,mode", [(16, 1.0, "uniform"), (17, 0.6, "uniform"), (12, 0.5, "fixed")])
def test_every_prefix_draw_keeps_a_prefix(channels: int, ratio: float, mode: str) -> None:
    """Every row is False on channels 0..K-1 and True on K..C-1 (a plain loop over the row), K = C - L, and the
    draw records that one span."""
    draw = ChannelSpanMasker(channels, ratio, 4, length_mode=mode, p_all=0.0, mode="prefix").draw(3000, _gen(21))
    for b in range(3000):
        row = draw.masked[b].tolist()
        k = channels - int(draw.length[b])
        assert row == [False] * k + [True] * (channels - k)
        assert _runs(draw.masked[b]) == ([] if k == channels else [(k, channels - k)])
        assert int(draw.lengths[b, 0]) == channels - k and int(draw.starts[b, 0]) == (k if k < channels else 0)
    if mode == "fixed":
        assert bool((_kept_prefix(draw.masked) == channels - math.floor(ratio * channels)).all())


def test_prefix_length_law_is_uniform() -> None:
    """rho = 1, p_all = 0: the kept prefix K = C - L is uniform on {0..C}, each value with probability 1/(C+1)."""
    channels, n = 16, 34000
    kept = _kept_prefix(ChannelSpanMasker(channels, 1.0, 4, p_all=0.0, mode="prefix")(n, _gen(22)))
    p = 1.0 / (channels + 1)
    counts = torch.bincount(kept, minlength=channels + 1).double() / n
    assert counts.shape[0] == channels + 1
    assert (counts - p).abs().max().item() < 4.5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("ratio,p_all", [(0.5, 0.0), (0.5, 0.2), (1.0, 0.1)])
def test_prefix_per_channel_probability_matches_closed_form(ratio: float, p_all: float) -> None:
    """P(channel c masked) = p_all + (1 - p_all) P(L >= C - c), L ~ U{0..L_mask}:
    (1 - p_all) max(0, L_mask - (C - c) + 1) / (L_mask + 1) + p_all."""
    channels, n = 16, 30000
    mask = ChannelSpanMasker(channels, ratio, 4, p_all=p_all, mode="prefix")(n, _gen(23)).double()
    top = math.floor(ratio * channels)
    for c in range(channels):
        expected = p_all + (1 - p_all) * max(0, top - (channels - c) + 1) / (top + 1)
        tol = 4.5 * math.sqrt(max(expected * (1 - expected), 1e-12) / n) + 1e-12
        assert abs(mask[:, c].mean().item() - expected) <= tol, (c, mask[:, c].mean().item(), expected)


def test_mode_argument_and_the_old_span_switch() -> None:
    """`span: false` still means point-wise; `mode` overrides it; unknown modes are refused."""
    assert ChannelSpanMasker(8, span=False).mode == "point"
    assert ChannelSpanMasker(8).mode == "span"
    assert ChannelSpanMasker(8, span=False, mode="prefix").mode == "prefix"
    with pytest.raises(ValueError, match="mask mode"):
        ChannelSpanMasker(8, mode="suffix")
    # rho = 0, p_all = 0 never masks in prefix mode either
    assert not ChannelSpanMasker(16, 0.0, 4, p_all=0.0, mode="prefix")(200, _gen(24)).any()
