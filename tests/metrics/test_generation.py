import json

import numpy as np
import pytest
import torch

from lafa.audio import load_audio, save_audio
from lafa.commands.evaluate import main as evaluate_main
from lafa.commands.evaluate import read_prompts
from lafa.metrics.caches import load_reference_cache, sha256_file
from lafa.metrics.frechet import frechet_distance, gaussian_stats
from lafa.metrics.generation import evaluate_folders
from lafa.metrics.mel_fd import FD_MEL_LABEL
from lafa.metrics.openl3 import OpenL3Embedder, build_openl3

SR = 44100


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    g = torch.Generator().manual_seed(0)
    t = torch.arange(int(0.4 * SR)) / SR
    for i in range(2):
        tone = 0.5 * torch.sin(2 * torch.pi * (300 + 200 * i) * t)
        save_audio(root / "generated" / f"id{i}.wav", torch.stack([tone, 0.5 * tone]), SR)
        save_audio(root / "reference" / f"id{i}.flac", 0.3 * torch.randn(2, len(t), generator=g), SR)
    prompts = {"id0": "a low tone", "id1": "a higher tone"}
    return root / "generated", root / "reference", prompts


def test_without_weights_only_fd_mel_runs_and_caches(folders, tmp_path):
    gen, ref, prompts = folders
    cache = tmp_path / "ref_stats.npz"
    out = evaluate_folders(gen, ref, prompts, stats_cache=str(cache))
    assert out["metrics"]["fd_mel"]["label"] == FD_MEL_LABEL and out["metrics"]["fd_mel"]["value"] > 0
    for name in ("fd_openl3", "kl_passt", "clap_score"):
        assert "no weights configured" in out["metrics"][name]["skipped"]
    assert out["comparable_to_paper"] is False and out["num_generated"] == 2 and out["num_reference"] == 2
    assert cache.is_file() and set(load_reference_cache(cache)) == {"fd_mel"}
    again = evaluate_folders(gen, cache, prompts)  # the statistics file stands in for the reference folder
    assert again["metrics"]["fd_mel"]["value"] == pytest.approx(out["metrics"]["fd_mel"]["value"], rel=1e-12)


def test_fd_openl3_matches_direct_pipeline_and_is_cached(folders, keras_file, tmp_path):
    gen, ref, _ = folders
    path, _ = keras_file
    cache = tmp_path / "ref_stats.npz"
    out = evaluate_folders(gen, ref, openl3_weights=str(path), stats_cache=str(cache), device="cpu")
    fd = out["metrics"]["fd_openl3"]
    assert fd["weights"] == {"kind": "file", "path": str(path), "sha256": sha256_file(path)}
    assert fd["settings"]["content_type"] == "music" and fd["settings"]["hop_seconds"] == 0.5
    # every frame of every clip pooled: 0.4 s clips give one window each
    embedder = OpenL3Embedder(build_openl3(path))

    def frames(folder):
        return np.concatenate(
            [embedder.embed(*load_audio(p)).double().numpy() for p in sorted(folder.iterdir())]
        )

    fg, fr = frames(gen), frames(ref)
    assert fd["frames_generated"] == len(fg) == 2 and fr.shape == (2, 1024)
    assert fd["value"] == pytest.approx(frechet_distance(*gaussian_stats(fg), *gaussian_stats(fr)), rel=1e-6)
    # the cached reference reproduces the value without the reference audio
    again = evaluate_folders(gen, cache, openl3_weights=str(path), device="cpu")
    assert again["metrics"]["fd_openl3"]["value"] == pytest.approx(fd["value"], rel=1e-9)
    # throughput counts what this run embedded: both sets first, only the generated clips once cached
    assert fd["throughput"]["clips_embedded"] == 4 and fd["throughput"]["clips_per_second"] > 0
    assert again["metrics"]["fd_openl3"]["throughput"]["clips_embedded"] == 2
    # a cache made with other weights is refused rather than silently reused
    other = tmp_path / "openl3_audio_mel256_music-other.h5"
    other.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="fd_openl3"):
        evaluate_folders(gen, cache, openl3_weights=str(other), device="cpu")


def test_random_weights_everywhere_are_labelled_and_seeded(folders):
    gen, ref, prompts = folders
    out = evaluate_folders(gen, ref, prompts, allow_random_weights=True, seed=3, device="cpu")
    assert out["comparable_to_paper"] is False
    assert len(out["warnings"]) == 3 and all("NOT comparable" in w for w in out["warnings"])
    for name in ("fd_openl3", "kl_passt", "clap_score"):
        assert out["metrics"][name]["weights"] == {
            "kind": "random",
            "seed": 3,
            "note": out["warnings"][0].split(": ", 1)[1],
        }
        assert np.isfinite(out["metrics"][name]["value"])
    assert out["metrics"]["kl_passt"]["paired_ids"] == 2
    assert out["metrics"]["clap_score"]["scored_ids"] == 2
    json.dumps(out)  # the report is plain JSON


def test_cli_writes_report_and_prints_table_row(folders, tmp_path, capsys):
    gen, ref, prompts = folders
    prompts_file = tmp_path / "prompts.json"
    prompts_file.write_text(json.dumps([{"id": k, "caption": v} for k, v in prompts.items()]))
    assert read_prompts(prompts_file) == prompts
    report = tmp_path / "report.json"
    assert (
        evaluate_main(
            [
                "--generated",
                str(gen),
                "--reference",
                str(ref),
                "--prompts",
                str(prompts_file),
                "--out",
                str(report),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| FD_openl3 n/a | KL_PaSST n/a | CLAP n/a | fd_mel" in printed and "not FD_openl3" in printed
    data = json.loads(report.read_text())
    assert data["metrics"]["fd_mel"]["value"] > 0
    # the batching flags reach the run and its report; the unbatched path gives the same numbers
    unbatched = tmp_path / "per_clip.json"
    assert evaluate_main(["--generated", str(gen), "--reference", str(ref), "--out", str(unbatched), "--per_clip",
                          "--allow_random_weights"]) == 0
    batched = tmp_path / "batched.json"
    assert evaluate_main(["--generated", str(gen), "--reference", str(ref), "--out", str(batched),
                          "--openl3_batch_windows", "3", "--decode_workers", "2", "--allow_random_weights"]) == 0
    a, b = json.loads(unbatched.read_text())["metrics"], json.loads(batched.read_text())["metrics"]
    assert a["fd_openl3"]["throughput"]["batching"] == {"openl3_windows": 0, "passt_windows": 0, "clap_clips": 0,
                                                        "workers": 0}
    assert b["fd_openl3"]["throughput"]["batching"]["openl3_windows"] == 3
    assert b["fd_openl3"]["throughput"]["batching"]["workers"] == 2
    assert b["fd_openl3"]["value"] == pytest.approx(a["fd_openl3"]["value"], rel=1e-6)


def test_embedding_cache_is_keyed_by_content_and_model(folders, keras_file, tmp_path):
    gen, ref, _ = folders
    path, _ = keras_file
    cache = tmp_path / "embeddings"
    first = evaluate_folders(gen, ref, openl3_weights=str(path), embedding_cache=str(cache), device="cpu")
    fd = first["metrics"]["fd_openl3"]
    assert fd["throughput"]["clips_embedded"] == 4 and len(list(cache.glob("*.npy"))) == 4
    # a second run (and a renamed copy of the generated folder) embeds nothing and gives the same value
    copy = tmp_path / "copy"
    copy.mkdir()
    for i, p in enumerate(sorted(gen.iterdir())):
        (copy / f"renamed{i}{p.suffix}").write_bytes(p.read_bytes())
    again = evaluate_folders(copy, ref, openl3_weights=str(path), embedding_cache=str(cache), device="cpu")
    assert again["metrics"]["fd_openl3"]["throughput"]["clips_embedded"] == 0
    assert again["metrics"]["fd_openl3"]["value"] == pytest.approx(fd["value"], rel=1e-12)
    # an edited file misses; another path (mono) keys other entries
    edited = sorted(copy.iterdir())[0]
    audio, sr = load_audio(edited)
    save_audio(edited, audio * 0.5, sr)
    third = evaluate_folders(copy, ref, openl3_weights=str(path), embedding_cache=str(cache), device="cpu")
    assert third["metrics"]["fd_openl3"]["throughput"]["clips_embedded"] == 1
    mono = evaluate_folders(
        gen, ref, openl3_weights=str(path), embedding_cache=str(cache), openl3_channel_mode="mono", device="cpu"
    )
    assert mono["metrics"]["fd_openl3"]["throughput"]["clips_embedded"] == 4
    # the STFT mode keys other entries too, and the label says when it is not the reference's
    assert first["metrics"]["fd_openl3"]["settings"]["fft"].startswith("reference")
    exact = evaluate_folders(gen, ref, openl3_weights=str(path), embedding_cache=str(cache), openl3_fft="exact",
                             device="cpu")  # fmt: skip
    assert exact["metrics"]["fd_openl3"]["throughput"]["clips_embedded"] == 4
    assert "exact FFT: not the reference's numbers" in exact["metrics"]["fd_openl3"]["label"]
    assert not list(cache.glob("*.tmp*"))
