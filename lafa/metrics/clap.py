"""CLAP score as Stability's stable-audio-metrics computes it, with transformers' ClapModel from a local directory.

Per clip: mono, 48 kHz with librosa's soxr_hq and its output length, peak -1 dBFS, int16 round trip, then the
directory's feature extractor, `is_longer` from the clip itself and the fusion crops seeded per clip id; text:
tokens padded and truncated to 77; the score: mean cosine between each clip and its prompt (docs/metrics.md,
"CLAP score").
"""

from __future__ import annotations

import itertools
import json
import threading
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lafa.metrics.batched import prefetch
from lafa.metrics.reference_audio import as_numpy, librosa_mono, librosa_soxr_hq, load_native, peak_normalize

CLAP_SAMPLE_RATE = 48000
TEXT_MAX_TOKENS = 77  # laion_clap's tokenizer settings
TEXT_BATCH = 64
_NUMPY_RNG = threading.Lock()  # numpy's global generator, seeded per clip for the fusion crops


def int16_round_trip(x: np.ndarray) -> np.ndarray:
    """laion_clap's float32_to_int16 then int16_to_float32 (the division in float64, then float32)."""
    q = (np.clip(x, -1.0, 1.0) * np.float32(32767.0)).astype(np.int16)
    return (q / 32767.0).astype(np.float32)


def clap_waveform(audio: torch.Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """(channels, S) at any rate -> (S',) float32 at 48 kHz as the reference feeds CLAP."""
    mono = librosa_mono(as_numpy(audio))  # librosa.load: mono, then resample
    return int16_round_trip(peak_normalize(librosa_soxr_hq(mono, sample_rate, CLAP_SAMPLE_RATE)))


def clip_seed(seed: int, clip_id: str) -> int:
    """The fusion-crop seed of one clip: fixed by the run seed and the id, independent of the clip order."""
    return zlib.crc32(f"{seed}:{clip_id}".encode())


class ClapScorer:
    """Audio and text embeddings of a local Hugging Face CLAP directory (model + processor)."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu"):
        from transformers import ClapModel, ClapProcessor

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a Hugging Face CLAP directory (no config.json)")
        self.model = ClapModel.from_pretrained(model_dir).eval().to(device)
        self.processor = ClapProcessor.from_pretrained(model_dir)
        self.device = torch.device(device)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(N, projection_dim) unit-norm text embeddings."""
        tokenize, out = self.processor.tokenizer, []
        for i in range(0, len(texts), TEXT_BATCH):
            tokens = tokenize(texts[i : i + TEXT_BATCH], padding="max_length", truncation=True,
                              max_length=TEXT_MAX_TOKENS, return_tensors="pt").to(self.device)
            out.append(self.model.get_text_features(**tokens).pooler_output.float().cpu())
        return torch.cat(out)

    def audio_inputs(self, waveform: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_features (1, ...), is_longer (1, 1)) of one 48 kHz waveform; `seed` fixes the fusion crops."""
        extractor = self.processor.feature_extractor
        with _NUMPY_RNG:  # the extractor draws its crops from numpy's global generator: one clip at a time
            state = np.random.get_state()
            try:
                np.random.seed(seed)
                features = extractor(waveform, sampling_rate=CLAP_SAMPLE_RATE, return_tensors="pt")
            finally:
                np.random.set_state(state)
        # longer = fused crops taken: more than max_length samples and more frames than one chunk (laion_clap)
        chunk_frames = extractor.nb_max_samples // extractor.hop_length + 1
        samples = len(waveform)
        longer = samples > extractor.nb_max_samples and samples // extractor.hop_length + 1 != chunk_frames
        return features["input_features"], torch.tensor([[longer]])

    @torch.no_grad()
    def embed_inputs(self, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """(N, projection_dim) unit-norm embeddings of N clips' audio_inputs in one forward."""
        features = torch.cat([f for f, _ in inputs]).to(self.device)  # (N, 4, frames, mels) with fusion
        is_longer = torch.cat([b for _, b in inputs]).to(self.device)  # (N, 1)
        emb = self.model.get_audio_features(input_features=features, is_longer=is_longer).pooler_output
        return emb.float().cpu()

    def audio_embedding(self, waveform: np.ndarray, seed: int) -> torch.Tensor:
        """(projection_dim,) unit-norm embedding of one 48 kHz waveform; `seed` fixes the fusion crops."""
        return self.embed_inputs([self.audio_inputs(waveform, seed)])[0]


def clap_score(scorer: ClapScorer, clips: dict[str, str | Path | tuple[torch.Tensor, int]],
               prompts: dict[str, str], seed: int = 0, batch_clips: int = 0, workers: int = 0) -> dict:
    """Mean cosine between each clip (id -> file, or (audio, sample rate)) and its prompt, over ids with both.

    batch_clips > 1 embeds that many clips per forward; `workers` threads decode and resample ahead of it.
    """
    ids = sorted(set(clips) & set(prompts))
    if not ids:
        raise ValueError("no generated clip has a prompt (ids are the file stems / prompts.json keys)")
    text = scorer.text_embeddings([prompts[i] for i in ids])

    def prepare(clip_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        return scorer.audio_inputs(clap_waveform(*load_native(clips[clip_id])), clip_seed(seed, clip_id))

    ready = prefetch(ids, prepare, workers, ahead=max(2, 2 * workers, batch_clips))
    ready, audio = iter(tqdm(ready, total=len(ids), desc="clap", leave=False)), []
    while pending := list(itertools.islice(ready, max(batch_clips, 1))):
        audio.append(scorer.embed_inputs(pending))
    cosines = torch.nn.functional.cosine_similarity(torch.cat(audio), text, dim=1, eps=1e-8)
    return {"value": float(np.mean([float(c) for c in cosines])), "scored_ids": len(ids),
            "clips_without_prompt": len(set(clips) - set(prompts))}


def _byte_level_vocab() -> dict[str, int]:
    """RoBERTa's special tokens and the 256 byte symbols of byte-level BPE (no merges)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    symbols = [chr(c) for c in printable] + [chr(256 + k) for k in range(len(extra))]
    return {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *symbols, "<mask>"])}


def write_random_clap(directory: str | Path, seed: int = 0) -> Path:
    """A small random-weight CLAP (HTSAT with fusion + RoBERTa, byte-level tokenizer) as a local HF directory.

    For tests and the offline demo only: its scores are not comparable to any published CLAP score.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    directory = Path(directory)
    vocab = _byte_level_vocab()
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=TEXT_MAX_TOKENS + 3, pad_token_id=1,
            bos_token_id=0, eos_token_id=2,
        ),
        audio_config=dict(
            patch_embeds_hidden_size=8, depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
            hidden_size=64, enable_fusion=True, projection_hidden_size=32,
        ),
        projection_dim=16,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config).eval()
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[])
    extractor = ClapFeatureExtractor(frequency_min=50, frequency_max=14000)  # laion/clap-htsat-fused's
    model.save_pretrained(directory)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    note = {"seed": seed, "comparable_to_paper": False}
    (directory / "lafa_random_weights.json").write_text(json.dumps(note))
    return directory
