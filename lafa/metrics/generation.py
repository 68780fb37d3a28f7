"""Score a folder of generated audio against a reference: FD_openl3, KL_PaSST, CLAP score (Tables 1-3, 5-8).

`evaluate_folders` always computes the offline fd_mel, and each paper metric whose weights are configured.
With `allow_random_weights` (the offline demo) a metric without weights runs on random-weight models built
locally, and the result says plainly that those numbers are not comparable to the paper's. Every metric names
the weights (SHA-256 of the file, or the random seed) and the settings that produced it. The reference side
(OpenL3 / log-mel statistics, PaSST probabilities per id) can be cached to a file and passed as `reference`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lafa.devices import resolve_device
from lafa.errors import BadInput
from lafa.metrics.batched import Batching, embed_files
from lafa.metrics.caches import EmbeddingCache
from lafa.metrics.clap import ClapScorer, clap_score, write_random_clap
from lafa.metrics.folders import (
    audio_files,
    check_lengths,
    check_pairs,
    check_prompts,
    probe_files,
    read_prompts,
    refuse_short,
    refuse_silence,
)
from lafa.metrics.frechet import frechet_distance, gaussian_stats
from lafa.metrics.mel_fd import SETTINGS as MEL_SETTINGS
from lafa.metrics.mel_fd import fd_mel_from_stats, files_mel_stats, too_short
from lafa.metrics.metric_weights import (
    RANDOM_NOTE,
    cache_key,
    check_openl3_file,
    check_weights_path,
    checked_weights,
)
from lafa.metrics.openl3 import OpenL3Embedder, build_openl3, num_windows
from lafa.metrics.passt import KL_EPS, PasstTagger, build_passt, paired_kl
from lafa.metrics.reference_audio import load_native
from lafa.metrics.reference_side import ReferenceSide

OPENL3_SETTINGS = {"channels": 2, "sample_rate": 44100, "hop_seconds": 0.5, "peak_dbfs": -1.0,
                   "front_end": "openl3 0.4.2 / kapre 0.3",
                   "resampling": "soxr HQ to 44.1 kHz, resampy 0.2.2 kaiser_best to 48 kHz"}  # fmt: skip
OPENL3_PATHS = {
    "stereo": "stable-audio-metrics extract_embeddings (batching=N): channels embedded separately; "
    "the path of its published reference statistics",
    "mono": "stable-audio-metrics extract_embeddings_nobatching (openl3_fd's default batching=False): "
    "down-mixed, mono embedding used as L and R",
}
OPENL3_FFTS = {
    "reference": "reference: TensorFlow 2.13's CPU STFT bit for bit (its Hann window, Eigen's FFT), as the reference",
    "exact": "exact: torch.fft (no TensorFlow rounding; not comparable with the reference at 44.1 kHz)",
}
PASST_SETTINGS = {"arch": "passt_s_swa_p16_128_ap476", "sample_rate": 32000, "resampling": "librosa soxr_hq", "window_seconds": 10,
                  "step_seconds": 5, "collect": "mean of logits, softmax over 527", "eps": KL_EPS, "peak_dbfs": -1.0}  # fmt: skip
CLAP_SETTINGS = {"sample_rate": 48000, "resampling": "librosa soxr_hq (librosa's output length)", "peak_dbfs": -1.0, "int16_round_trip": True, "text_max_tokens": 77,
                 "is_longer": "num_samples > 480000 (fusion)", "crops": "seeded per clip id"}  # fmt: skip


class Throughput:
    """Clips embedded (not read from a cache), wall and CPU seconds per metric in this run."""

    def __init__(self, batching: Batching) -> None:
        self.batching = batching
        self.counts: dict[str, list[float]] = {}

    def timed(self, metric: str, fn: Callable[[], dict], cache: EmbeddingCache | None, count: int) -> dict:
        """Run fn, adding its wall time and the clips it embedded (the cache's misses, or `count`)."""
        start, cpu, before = time.perf_counter(), time.process_time(), cache.computed if cache else 0
        out = fn()
        entry = self.counts.setdefault(metric, [0, 0.0, 0.0])
        entry[0] += (cache.computed - before) if cache else count
        entry[1] += time.perf_counter() - start
        entry[2] += time.process_time() - cpu  # every thread of the process (torch's, the prefetch threads)
        return out

    def report(self, metric: str) -> dict:
        clips, seconds, cpu = self.counts.get(metric, [0, 0.0, 0.0])
        rate = clips / seconds if seconds > 0 and clips else None
        return {"clips_embedded": int(clips), "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                "clips_per_second": rate, "batching": self.batching.as_dict()}


def _openl3_stats(
    files: dict[str, Path], embedder: OpenL3Embedder, cache: EmbeddingCache, batching: Batching, desc: str
) -> dict:
    """Every frame of every clip pooled into (mu, sigma); windows of several clips per forward."""

    def prepare(_: str, path: Path) -> list[torch.Tensor]:  # per side: (windows, 48000) at 48 kHz
        return [embedder.channel_windows(c) for c in embedder.clip_channels(*load_native(path))]

    def embed(clips: list[list[torch.Tensor]]) -> list[np.ndarray]:
        if batching.openl3_windows <= 0:  # per clip, per side, in the embedder's 16-window chunks
            sides = [[embedder.embed_windows(w) for w in clip] for clip in clips]
        else:  # all windows of all clips in forwards of up to openl3_windows (embedder.batch_size)
            flat = embedder.embed_windows(torch.cat([w for clip in clips for w in clip]))
            counts = [len(w) for clip in clips for w in clip]
            parts = iter(torch.split(flat, counts))
            sides = [[next(parts) for _ in clip] for clip in clips]
        return [torch.cat(s * 2 if len(s) == 1 else s, dim=1).numpy() for s in sides]  # (frames, 2 x size)

    per_clip = embed_files(files, cache, prepare, embed, lambda clip: sum(len(w) for w in clip),
                           batching.openl3_windows, batching.workers, desc)  # fmt: skip
    features = np.concatenate([np.asarray(v, np.float64) for v in per_clip.values()])
    mu, sigma = gaussian_stats(features)
    return {"mu": mu, "sigma": sigma, "frames": np.asarray(len(features))}


def _passt_probs(
    files: dict[str, Path], tagger: PasstTagger, cache: EmbeddingCache, batching: Batching, desc: str
) -> dict:
    """AudioSet probabilities per id; 10 s windows of several clips per forward."""

    def embed(clips: list[list[torch.Tensor]]) -> list[np.ndarray]:
        return [p.numpy() for p in tagger.probabilities_batch(clips, batching.passt_windows)]

    probs = embed_files(files, cache, lambda _, path: tagger.windows(*load_native(path)), embed, len,
                        batching.passt_windows, batching.workers, desc)  # fmt: skip
    return {"ids": np.asarray(list(probs)), "probs": np.stack(list(probs.values()))}


def _probs_by_id(arrays: dict) -> dict[str, torch.Tensor]:
    return {str(i): torch.from_numpy(p) for i, p in zip(arrays["ids"], arrays["probs"], strict=True)}


def evaluate_folders(
    generated: str | Path, reference: str | Path, prompts: str | Path | dict[str, str] | None = None,
    openl3_weights: str | None = None, passt_weights: str | None = None, clap_dir: str | None = None,
    content_type: Literal["music", "env"] = "music",
    openl3_input_repr: Literal["mel256", "mel128", "linear"] = "mel256",
    openl3_embedding_size: Literal[512, 6144] = 512,
    openl3_channel_mode: Literal["stereo", "mono"] = "stereo",
    openl3_fft: Literal["reference", "exact"] = "reference",
    allow_random_weights: bool = False, allow_unpaired: bool = False, seed: int = 0,
    stats_cache: str | None = None, device: str = "auto", embedding_cache: str | None = None,
    batching: Batching | None = None, log: Callable[[str], None] | None = print,
) -> dict:
    """Score a folder of generated audio against a reference folder or statistics file.

    Every input is checked before anything is embedded: the folders and their ids, the pairs, the prompts, the
    weight files, a statistics file's entries, and every audio file decoded in full (lengths, silence). A
    mistake is one `lafa.errors.BadInput` naming the file or option and the fix. What each metric uses is
    said through `log` (print) first. Either batching gives the same numbers to float rounding
    (docs/benchmarks.md, "Evaluation throughput").

    Args:
        generated: folder of generated audio, one file per id (<id>.wav; the id is the file name without suffix)
        reference: folder of reference audio (<id>.<ext>), or a reference statistics file (.npz) written by
            --stats_cache
        prompts: prompts.json ({id: text}, or a list of {id, prompt} records) for the CLAP score; none: no CLAP
        openl3_weights: openl3_audio_mel256_{music,env}-v0_4_0.h5 (FD_openl3); none: FD_openl3 skipped
        passt_weights: passt-s-f128-p16-s10-ap.476-swa.pt (KL_PaSST); none: KL_PaSST skipped
        clap_dir: local Hugging Face CLAP directory, laion/clap-htsat-fused (CLAP score); none: CLAP skipped
        content_type: OpenL3 content type: music (music sets) or env (AudioCaps); the weight file must hold it
        openl3_input_repr: OpenL3 input representation (the paper's FD_openl3: mel256); the weight file must hold it
        openl3_embedding_size: OpenL3 embedding size (the paper's: 512)
        openl3_channel_mode: stable-audio-metrics path: stereo = batched, channels embedded separately (its
            published statistics); mono = its non-batched default, down-mixed (docs/metrics.md)
        openl3_fft: OpenL3 STFT: reference = TensorFlow 2.13's, bit for bit, as the reference code computes it;
            exact = torch.fft (FD differs by ~10% at 44.1 kHz, docs/metrics.md)
        allow_random_weights: run the metrics without weights on random-weight models built locally (demo; the
            numbers are starred and NOT comparable to the paper's)
        allow_unpaired: score sets whose ids only partly match (or, with no id in common, the FD metrics alone):
            FD metrics use every file, KL_PaSST and CLAP the ids in both; the console says what is left out.
            Without it such sets are refused before anything is embedded
        seed: seed of random-weight models and of CLAP's crops of clips longer than 10 s
        stats_cache: .npz file keeping the reference statistics (reused while weights, settings and reference
            ids match; pass it later as --reference)
        device: auto (cuda when available, else cpu), cpu, cuda or cuda:N
        embedding_cache: folder of per-file OpenL3/PaSST embeddings keyed by file content and model (a set is
            embedded once)
        batching: clips per forward and decode threads (default Batching()); Batching.per_clip() embeds each
            clip on its own
        log: where the input summary and skipped metrics are said (print); None: nowhere
    """
    batching = Batching() if batching is None else batching
    log = log or (lambda _: None)
    if content_type not in ("music", "env"):
        raise BadInput(f"--content_type {content_type}", "not a content type", "use music or env")
    device = resolve_device(device)
    generated_dir = Path(generated)
    generated = audio_files(generated_dir, "--generated")
    ref = ReferenceSide(reference, stats_cache)
    if isinstance(prompts, (str, Path)):
        prompts_where, prompts = f"--prompts {prompts}", read_prompts(prompts)
    else:
        prompts_where = "prompts"
    metrics: dict[str, dict] = {}
    speed = Throughput(batching)

    # ---- every check before any network is built or any clip embedded ----
    options = {"fd_openl3": (openl3_weights, "--openl3_weights"), "kl_passt": (passt_weights, "--passt_weights"),
               "clap_score": (clap_dir, "--clap_dir")}  # fmt: skip
    weights_of: dict[str, dict] = {}
    for name, (path, flag) in options.items():
        check_weights_path(path, flag, name)  # also where the metric is skipped: a wrong path is a mistake
        if name == "clap_score" and not prompts:
            metrics[name] = {"skipped": "no prompts given (--prompts prompts.json: {id: text})"}
        elif path is None and not allow_random_weights:
            metrics[name] = {"skipped": f"no weights configured ({flag}); see docs/metrics.md"}
        else:
            weights_of[name] = checked_weights(path, seed, flag)
            if name == "fd_openl3" and path is not None:
                check_openl3_file(path, openl3_input_repr, content_type)
    openl3_settings = {**OPENL3_SETTINGS, "content_type": content_type, "input_repr": openl3_input_repr,
                       "embedding_size": openl3_embedding_size, "channel_mode": openl3_channel_mode,
                       "path": OPENL3_PATHS[openl3_channel_mode], "fft": OPENL3_FFTS[openl3_fft]}
    keys = {"fd_mel": cache_key({"kind": "none"}, MEL_SETTINGS)}
    for name, settings in (("fd_openl3", openl3_settings), ("kl_passt", PASST_SETTINGS)):
        if name in weights_of:
            keys[name] = cache_key(weights_of[name], settings)
    for name, key in keys.items():
        ref.check(name, key)
    unpaired = check_pairs(generated, ref.ids, ref.path, generated_dir, [m for m in ("kl_passt",) if m in weights_of],
                            allow_unpaired, log)
    for name in unpaired:
        metrics[name] = {"skipped": "no id is in both the generated and the reference set (it pairs clips by id)"}
        weights_of.pop(name)
    if "clap_score" in weights_of and not check_prompts(generated, prompts, prompts_where, allow_unpaired, log):
        metrics["clap_score"] = {"skipped": "no generated clip has a prompt (ids are the file names without suffix)"}
        weights_of.pop("clap_score")
    gen_clips = probe_files(generated, "--generated", batching.workers)
    ref_clips = probe_files(ref.files, "--reference", batching.workers) if ref.files is not None else None
    check_lengths(gen_clips, ref_clips, log)
    half_window, rate = MEL_SETTINGS["n_fft"] // 2, MEL_SETTINGS["sample_rate"]
    why = f"fd_mel's STFT needs more than {half_window} samples at {rate} Hz ({half_window / rate * 1000:.1f} ms)"
    for clips, files in ((gen_clips, generated), (ref_clips, ref.files)):
        if clips is not None:
            refuse_short(clips, files, too_short, why)
    normalised = [m for m in ("fd_openl3", "kl_passt", "clap_score") if m in weights_of]
    if normalised:
        refuse_silence(gen_clips, generated, normalised)
        if ref_clips is not None:
            refuse_silence(ref_clips, ref.files, [m for m in normalised if m != "clap_score"])
    if "fd_openl3" in weights_of:
        for where, clips in ((f"--generated {generated_dir}", gen_clips), (f"--reference {ref.path}", ref_clips)):
            frames = sum(num_windows(int(seconds * 48000)) for seconds, _ in (clips or {}).values())
            if clips is not None and frames < 2:
                raise BadInput(where, f"its {len(clips)} clip(s) give {frames} OpenL3 frame (one "
                                      f"per 0.5 s): FD_openl3 needs a covariance of at least 2 frames",
                               "score more clips, or clips longer than 0.5 s")
    for name, metric in metrics.items():
        log(f"{name}: not computed: {metric['skipped']}")
    log(f"device: {device}")

    # ---- the metrics ----
    def both(metric: str, compute: Callable, cache: EmbeddingCache | None = None) -> tuple[dict, dict]:
        """(generated, reference) statistics of a metric (the reference's first, from `ref` while valid)."""
        ref_stats = ref.get(metric, keys[metric],
                            lambda f: speed.timed(metric, lambda: compute(f, "reference"), cache, len(f)))
        return speed.timed(metric, lambda: compute(generated, "generated"), cache, len(generated)), ref_stats

    def mel(files: dict[str, Path], _: str) -> dict:
        return dict(zip(("mu", "sigma", "frames"), files_mel_stats(files, batching.workers), strict=True))

    gen_mel, ref_mel = both("fd_mel", mel)
    gen_mel, ref_mel = ((s["mu"], s["sigma"], int(s["frames"])) for s in (gen_mel, ref_mel))
    metrics["fd_mel"] = fd_mel_from_stats(gen_mel, ref_mel)
    metrics["fd_mel"]["throughput"] = speed.report("fd_mel")

    if (weights := weights_of.get("fd_openl3")) is not None:
        model = build_openl3(openl3_weights, seed, openl3_input_repr, content_type, openl3_embedding_size,
                             openl3_fft)
        # channels_last convolutions: 17% less CPU here, equal to 2e-6 relative (docs/benchmarks.md)
        model = model.to(device, memory_format=torch.channels_last)
        embedder = OpenL3Embedder(model, channel_mode=openl3_channel_mode,
                                  batch_size=batching.openl3_windows or 16)
        l3_cache = EmbeddingCache(embedding_cache, keys["fd_openl3"])
        gen_l3, ref_l3 = both("fd_openl3", lambda f, side: _openl3_stats(f, embedder, l3_cache, batching,
                                                                          f"openl3 {side}"), l3_cache)
        metrics["fd_openl3"] = {
            "value": frechet_distance(gen_l3["mu"], gen_l3["sigma"], ref_l3["mu"], ref_l3["sigma"]),
            "label": f"FD_openl3 (stable-audio-metrics pipeline, {openl3_channel_mode} path"
            + (")" if openl3_fft == "reference" else ", exact FFT: not the reference's numbers)"),
            "frames_generated": int(gen_l3["frames"]),
            "frames_reference": int(ref_l3["frames"]),
            "weights": weights,
            "settings": openl3_settings,
            "throughput": speed.report("fd_openl3"),
        }

    if (weights := weights_of.get("kl_passt")) is not None:
        tagger = PasstTagger(build_passt(passt_weights, seed).to(device))
        p_cache = EmbeddingCache(embedding_cache, keys["kl_passt"])
        gen_p, ref_p = both(
            "kl_passt", lambda f, side: _passt_probs(f, tagger, p_cache, batching, f"passt {side}"), p_cache
        )
        kl = paired_kl(_probs_by_id(gen_p), _probs_by_id(ref_p))
        metrics["kl_passt"] = {**kl, "label": "KL_PaSST", "weights": weights, "settings": PASST_SETTINGS,
                               "throughput": speed.report("kl_passt")}  # fmt: skip

    if (weights := weights_of.get("clap_score")) is not None:
        with tempfile.TemporaryDirectory() as tmp:
            scorer = ClapScorer(clap_dir or write_random_clap(tmp, seed), device=device)
            n_scored = len(set(generated) & set(prompts))  # CLAP embeddings are not cached
            result = speed.timed("clap_score", lambda: clap_score(
                scorer, generated, prompts, seed, batching.clap_clips, batching.workers), None, n_scored)
        model = "small random HTSAT+RoBERTa (lafa)" if clap_dir is None else "local HF directory"
        settings = {**CLAP_SETTINGS, "model": model}
        metrics["clap_score"] = {**result, "label": "CLAP score", "weights": weights, "settings": settings,
                                 "throughput": speed.report("clap_score")}  # fmt: skip

    ref.save()
    metrics = {m: metrics[m] for m in ("fd_mel", "fd_openl3", "kl_passt", "clap_score")}
    paper = ("fd_openl3", "kl_passt", "clap_score")
    randoms = [m for m in paper if metrics[m].get("weights", {}).get("kind") == "random"]
    ref_ids = ref.ids
    return {
        "generated": str(generated_dir),
        "reference": str(reference),
        "num_generated": len(generated),
        "num_reference": len(ref.files) if ref.files is not None else None,
        "num_paired": len(set(generated) & set(ref_ids)) if ref_ids is not None else None,
        "content_type": content_type,
        "seed": seed,
        "comparable_to_paper": all(metrics[m].get("weights", {}).get("kind") == "file" for m in paper),
        "warnings": [f"{m}: {RANDOM_NOTE}" for m in randoms],
        "metrics": metrics,
    }


def table_row(result: dict) -> str:
    """A Table-1-style line: FD_openl3, KL_PaSST, CLAP (and the offline fd_mel, labelled)."""

    def cell(name: str, fmt: str) -> str:
        m = result["metrics"].get(name, {})
        if "value" not in m:
            return "n/a"
        return format(m["value"], fmt) + ("*" if m.get("weights", {}).get("kind") == "random" else "")

    row = (f"| FD_openl3 {cell('fd_openl3', '.2f')} | KL_PaSST {cell('kl_passt', '.3f')} "
           f"| CLAP {cell('clap_score', '.3f')} | fd_mel {cell('fd_mel', '.2f')} |")
    notes = ["fd_mel: offline log-mel Frechet distance, not FD_openl3"]
    if result["warnings"]:
        notes.insert(0, "*: " + RANDOM_NOTE)
    return "\n".join([row, *notes])
