"""Channel-span masking of a latent (paper Sec. 4.1, and the masked-length draw of the Sec. 5.4 study).

For C channels, ratio rho and max span count m, per example:
  1. L_mask = floor(rho * C); the length is L ~ U{0..L_mask} ("uniform", Sec. 5.4) or L = L_mask ("fixed").
  2. M ~ U{1..m}; split L into min(M, L) spans (a span has at least one channel) with random lengths that
     sum to L, each at most ceil(L / M).
  3. Place the spans at random, non-overlapping start indices (uniform over all arrangements).
  4. With probability p_all every channel is masked instead (Sec. 4.1: unconditional generation).
A channel is masked for every frame of its example (masks are (B, C), constant over time).

Three placements of the L masked channels (`mode`): "span" (Sec. 4.1, default): steps 2-3 above; "point"
(Table 5's "no span mask" cell): the same L channels scattered at random; "prefix" (DC-AE 1.5, arXiv
2508.00413, docs/lafa.md "Rival remedies"): the last L channels are masked, a kept prefix of K = C - L
(recorded as one span [C - L, C), count 1). span=False is mode "point" (a `mode` given overrides it).
ratio = 0 with p_all = 0 masks nothing: the masking-off control of the locality study (docs/study.md).
Everything is vectorised over the batch; a `torch.Generator` makes a draw reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lafa.models.presets import check_choice

LENGTH_MODES = ("uniform", "fixed")
MASK_MODES = ("span", "point", "prefix")


@dataclass
class SpanDraw:
    """One draw for a batch. masked (B, C) bool, True = masked; starts, lengths (B, m) long, ordered by start,
    unused span slots have length 0; length (B,) the drawn masked length L; count (B,) the drawn span count M;
    all (B,) bool, True where the p_all draw masked every channel (then masked is all True, spans are ignored)."""

    masked: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    length: torch.Tensor
    count: torch.Tensor
    all: torch.Tensor


class ChannelSpanMasker:
    """Sec. 4.1 channel-span masker. Call it with a batch size to get `masked` (B, C) bool, True = masked."""

    def __init__(
        self,
        channels: int,
        ratio: float = 1.0,
        max_spans: int = 4,
        length_mode: str = "uniform",
        p_all: float = 0.1,
        span: bool = True,
        mode: str | None = None,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if not 0.0 <= ratio <= 1.0:  # 0: nothing is ever masked (with p_all = 0: the no-masking control)
            raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
        if max_spans < 1:
            raise ValueError(f"max_spans must be >= 1, got {max_spans}")
        check_choice("length_mode", length_mode, LENGTH_MODES)
        if not 0.0 <= p_all <= 1.0:
            raise ValueError(f"p_all must be in [0, 1], got {p_all}")
        mode = mode if mode is not None else ("span" if span else "point")
        check_choice("mask mode", mode, MASK_MODES)
        self.mode = mode
        self.channels = channels
        self.max_spans = max_spans
        self.length_mode = length_mode
        self.p_all = p_all
        self.max_length = math.floor(ratio * channels)  # L_mask = floor(rho C)

    def __call__(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        return self.draw(batch_size, generator, device).masked

    def draw(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> SpanDraw:
        """Masks and the spans behind them for `batch_size` examples."""
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        b, c, m = batch_size, self.channels, self.max_spans

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=device)

        def randint(high: int, shape: tuple[int, ...]) -> torch.Tensor:  # U{0..high-1}
            return torch.randint(high, shape, generator=generator, device=device)

        if self.length_mode == "uniform":
            length = randint(self.max_length + 1, (b,))  # L ~ U{0..L_mask} (Sec. 5.4)
        else:
            length = torch.full((b,), self.max_length, device=device, dtype=torch.long)
        count = randint(m, (b,)) + 1  # M ~ U{1..m}
        all_masked = rand(b) < self.p_all

        if self.mode == "span":
            starts, lengths = self._spans(length, count, rand)
            channel = torch.arange(c, device=device)  # (C,)
            inside = (channel[None, None] >= starts[..., None]) & (
                channel[None, None] < (starts + lengths)[..., None]
            )  # (B, m, C)
            masked = inside.any(dim=1)
        elif self.mode == "prefix":  # keep channels 0 .. C - L - 1, mask the last L (DC-AE 1.5)
            masked = torch.arange(c, device=device)[None] >= (c - length)[:, None]
            count = (length > 0).long()
            starts, lengths = torch.zeros(2, b, m, dtype=torch.long, device=device)
            starts[:, 0], lengths[:, 0] = torch.where(length > 0, c - length, 0), length
        else:  # point-wise: L distinct channels uniformly at random
            rank = rand(b, c).argsort(dim=-1).argsort(dim=-1)  # a random permutation's ranks
            masked = rank < length[:, None]
            starts, lengths = torch.zeros(2, b, m, dtype=torch.long, device=device)
        masked = masked | all_masked[:, None]
        return SpanDraw(masked, starts, lengths, length, count, all_masked)

    def _spans(self, length: torch.Tensor, count: torch.Tensor, rand) -> tuple[torch.Tensor, torch.Tensor]:
        """Span starts and lengths (B, m), ordered by start, for masked lengths L and span counts M (B,)."""
        b, c, m = length.shape[0], self.channels, self.max_spans
        device = length.device
        slot = torch.arange(m, device=device)  # (m,)
        n_spans = torch.minimum(count, length)  # a span has >= 1 channel, so at most L spans (0 when L = 0)
        cap = torch.where(n_spans > 0, -(-length // count), 0)  # ceil(L / M); equals ceil(L / n_spans)

        # Lengths: start every used span at the cap, then deal the deficit d = n * cap - L (< n) one channel at a
        # time to a uniformly chosen used span that is still longer than 1 channel.
        used = slot[None] < n_spans[:, None]  # (B, m)
        lengths = torch.where(used, cap[:, None], 0)
        deficit = n_spans * cap - length
        for step in range(m - 1):
            eligible = (lengths > 1) & (step < deficit)[:, None]
            score = torch.where(eligible, rand(b, m), -1.0)
            pick = score.argmax(dim=-1)
            lengths = lengths - (eligible.any(dim=-1)[:, None] & (slot[None] == pick[:, None])).long()

        # Starts: lay out the n spans and the C - L free channels as a row of (C - L + n) items; choosing which n
        # item positions hold the spans, uniformly, gives every non-overlapping arrangement equal probability.
        items = c - length + n_spans  # (B,)
        position = torch.arange(c + m, device=device)  # (C + m,) >= every row's item count
        score = torch.where(position[None] < items[:, None], rand(b, c + m), -1.0)
        chosen = score.topk(m, dim=-1).indices  # the first n columns are a uniform n-subset of the items
        chosen = torch.where(used, chosen, c + m).sort(dim=-1).values  # (B, m), used ones first, ascending
        free_before = chosen - slot[None]  # free channels before span i
        span_before = torch.cumsum(lengths, dim=-1) - lengths  # channels of earlier spans
        starts = torch.where(used, free_before + span_before, 0)
        return starts, lengths
