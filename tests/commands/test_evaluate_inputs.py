"""`lafa evaluate` checks every input before it embeds anything (issue 25): each mistake is one line
`lafa evaluate: error: <file or option>: <what is wrong>; <how to fix>`, exit code 2, nothing written, and no
network built nor clip embedded (the constructors and the embedding are spied on)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lafa.metrics.generation as generation
from lafa.audio import save_audio
from lafa.errors import USER_ERROR_EXIT
from lafa.metrics.caches import save_reference_cache
from lafa.metrics.metric_weights import cache_key

SR = 44100


def write_clips(folder: Path, ids, seconds: float = 0.6, seed: int = 0) -> dict[str, Path]:
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i in ids:
        paths[i] = folder / f"{i}.wav"
        save_audio(paths[i], 0.3 * torch.randn(2, int(seconds * SR), generator=g), SR)
    return paths


@pytest.fixture
def no_embedding(monkeypatch):
    """Any network built or any clip embedded fails the test: the refusals must come first."""
    built = []

    def forbidden(name):
        def spy(*args, **kwargs):
            built.append(name)
            raise AssertionError(f"{name} was called before the inputs were refused")
        return spy

    for name in ("build_openl3", "build_passt", "ClapScorer", "write_random_clap", "files_mel_stats", "_openl3_stats",
                 "_passt_probs"):
        monkeypatch.setattr(generation, name, forbidden(name))
    return built


@pytest.fixture
def sets(tmp_path):
    write_clips(tmp_path / "gen", ["a", "b", "c"])
    write_clips(tmp_path / "ref", ["a", "b", "c"], seed=1)
    return tmp_path / "gen", tmp_path / "ref"


def refused(lafa, tmp_path, *args) -> str:
    """Run `lafa evaluate ARGS --out report.json`; assert the contract; return the error line."""
    out = tmp_path / "report.json"
    code, stdout, lines = lafa("evaluate", *args, "--out", out, "--stats_cache", tmp_path / "stats.npz",
                               "--embedding_cache", tmp_path / "emb")
    assert code == USER_ERROR_EXIT
    assert len(lines) == 1 and lines[0].startswith("lafa evaluate: error: "), lines
    assert "; " in lines[0]  # <what is wrong>; <how to fix>
    assert not out.exists() and not (tmp_path / "stats.npz").exists() and not (tmp_path / "emb").exists()
    return lines[0].removeprefix("lafa evaluate: error: ")


def test_empty_folder(lafa, tmp_path, sets, no_embedding):
    (tmp_path / "empty").mkdir()
    line = refused(lafa, tmp_path, "--generated", tmp_path / "empty", "--reference", sets[1])
    assert line.startswith(f"--generated {tmp_path / 'empty'}: no audio files (.wav, .flac, .ogg, .mp3, .opus) in it; ")
    line = refused(lafa, tmp_path, "--generated", sets[0], "--reference", tmp_path / "nowhere")
    assert line.startswith(f"--reference {tmp_path / 'nowhere'}: no such folder or file; give the folder of ")
    assert not no_embedding


def test_corrupt_and_empty_files(lafa, tmp_path, sets, no_embedding):
    gen, ref = sets
    (gen / "b.wav").write_bytes(b"RIFF" + b"\0" * 100)
    (gen / "c.wav").write_bytes(b"")
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--allow_random_weights")
    assert line.startswith(f"{gen / 'b.wav'}: cannot be decoded: ")
    assert "(1 more files of --generated cannot be decoded either)" in line
    assert line.endswith("; replace or remove the file: every audio file of the folder is scored")
    assert not no_embedding


def test_silent_clip_is_refused_when_a_paper_metric_normalises_it(lafa, tmp_path, sets, no_embedding):
    gen, ref = sets
    save_audio(gen / "b.wav", torch.zeros(2, SR // 2), SR)
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--allow_random_weights")
    assert line.startswith(f"{gen / 'b.wav'}: is silent (peak 0); remove or regenerate it: fd_openl3, kl_passt")


def test_folders_whose_names_do_not_match(lafa, tmp_path, no_embedding):
    gen = write_clips(tmp_path / "gen", ["g0", "g1"])["g0"].parent
    ref = write_clips(tmp_path / "ref", ["r0", "r1"])["r0"].parent
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--allow_random_weights")
    assert line.startswith(f"--generated {gen}: none of its 2 ids is among the 2 reference ids of {ref} "
                           "(generated: g0, g1; reference: r0, r1); kl_passt compares each generated clip with the "
                           "reference clip of the same id")
    assert not no_embedding


def test_three_generated_against_five_reference(lafa, tmp_path, no_embedding):
    gen = write_clips(tmp_path / "gen", ["a", "b", "c"])["a"].parent
    ref = write_clips(tmp_path / "ref", ["a", "b", "c", "d", "e"], seed=1)["a"].parent
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref)
    assert line == (f"--generated {gen}: 3 generated and 5 reference clips, 3 ids in both; 2 reference ids have no "
                    "generated clip (d, e); generate the missing clips or remove the extra files, or pass "
                    "--allow_unpaired to score the FD metrics on every file and the paired metrics on the ids in both")
    assert not no_embedding


def test_allow_unpaired_says_what_is_scored_and_what_is_left_out(lafa, tmp_path):
    gen = write_clips(tmp_path / "gen", ["a", "b", "c"])["a"].parent
    ref = write_clips(tmp_path / "ref", ["a", "b", "c", "d", "e"], seed=1)["a"].parent
    out = tmp_path / "report.json"
    code, stdout, lines = lafa("evaluate", "--generated", gen, "--reference", ref, "--allow_unpaired", "--out", out)
    assert code == 0 and not lines
    assert ("inputs: FD metrics use all 3 generated and 5 reference clips; unpaired: 2 reference ids have no "
            "generated clip (d, e)") in stdout
    assert "inputs: generated 3 clips, 0.60-0.60 s; reference 5 clips, 0.60-0.60 s; all decodable" in stdout
    # a metric that could not be computed says why on the console, not only in the JSON
    assert "fd_openl3: not computed: no weights configured (--openl3_weights); see docs/metrics.md" in stdout
    assert "clap_score: not computed: no prompts given (--prompts prompts.json: {id: text})" in stdout
    assert stdout.count("device: ") == 1
    report = json.loads(out.read_text())
    assert (report["num_generated"], report["num_reference"], report["num_paired"]) == (3, 5, 3)
    # the input summary and the skipped metrics come before anything is computed
    assert stdout.index("not computed") < stdout.index("| FD_openl3 n/a")


def test_prompts_that_match_no_clip(lafa, tmp_path, sets, no_embedding):
    gen, ref = sets
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"x": "rain", "y": "a synth pad"}))
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--prompts", prompts,
                   "--allow_random_weights")
    assert line.startswith(f"--prompts {prompts}: none of its 2 ids names a generated file (prompts: x, y; "
                           "generated: a, b, c); key the prompts by the generated files' names without suffix")
    prompts.write_text("{not json")
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--prompts", prompts)
    assert line.startswith(f"--prompts {prompts}: not a JSON file (")


def test_prompts_keyed_by_file_name_are_read_as_ids(tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"0000_rain.wav": "rain", "0001_pad": "a pad"}))
    assert generation.read_prompts(prompts) == {"0000_rain": "rain", "0001_pad": "a pad"}


def test_weights_and_statistics_files(lafa, tmp_path, sets, no_embedding):
    gen, ref = sets
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--passt_weights", tmp_path / "p.pt")
    assert line.startswith(f"--passt_weights {tmp_path / 'p.pt'}: no such file or folder; give the local weights")
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"\0" * 16)
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--openl3_weights", odd)
    assert line.startswith(f"--openl3_weights {odd}: weights.h5: cannot tell which OpenL3 model this file holds")
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--clap_dir", tmp_path)
    assert line.startswith(f"--clap_dir {tmp_path}: not a Hugging Face CLAP directory (no config.json)")
    stats = tmp_path / "given_stats.npz"  # a statistics file without the metric asked for
    save_reference_cache(stats, {"fd_mel": {"key": cache_key({"kind": "none"}, generation.MEL_SETTINGS),
                                            "reference_ids": ["a", "b", "c"],
                                            "arrays": {"mu": np.zeros(2), "sigma": np.eye(2), "frames": 3}}})
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", stats, "--allow_random_weights")
    assert line.startswith(f"--reference {stats}: the statistics file has no entry for fd_openl3 (it holds ['fd_mel']")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", bad)
    assert line.startswith(f"--reference {bad}: not a lafa reference statistics file (")
    assert not no_embedding


def test_options(lafa, tmp_path, sets, no_embedding):
    gen, ref = sets
    assert refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--content_type", "speech") == (
        "--content_type: speech is not one of 'music', 'env'; see `lafa evaluate --help`")
    assert refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--seed", "x") == (
        "--seed: x is not an integer; see `lafa evaluate --help`")
    assert refused(lafa, tmp_path, "--generated", gen) == "--reference: is required; see `lafa evaluate --help`"
    if not torch.cuda.is_available():
        assert refused(lafa, tmp_path, "--generated", gen, "--reference", ref, "--device", "cuda") == (
            "--device cuda: CUDA is not available on this machine; use --device auto or --device cpu")
    (tmp_path / "a_folder").mkdir()
    code, _, lines = lafa("evaluate", "--generated", gen, "--reference", ref, "--out", tmp_path / "a_folder")
    assert code == USER_ERROR_EXIT and lines == [
        f"lafa evaluate: error: --out {tmp_path / 'a_folder'}: is a folder; give the report's file name, e.g. "
        "--out report.json"]


@pytest.mark.parametrize("rate, samples", [(44100, 1024), (22050, 512), (48000, 1114)])
def test_a_clip_too_short_for_fd_mel_is_refused_before_embedding(lafa, tmp_path, sets, no_embedding, rate, samples):
    """A clip fd_mel's STFT cannot take (it reflects n_fft / 2 = 1024 samples at 44.1 kHz on each side) ended in a
    torch traceback after the other clips were embedded; it is now one line naming the file. The bound is the
    STFT's own: one sample more works (checked on the metric itself), the refused length fails inside it."""
    from lafa.metrics.mel_fd import files_mel_stats

    gen, ref = sets
    save_audio(gen / "b.wav", 0.3 * torch.randn(2, samples), rate)
    line = refused(lafa, tmp_path, "--generated", gen, "--reference", ref)
    assert line == (f"{gen / 'b.wav'}: is {samples / rate * 1000:.1f} ms long: fd_mel's STFT needs more than 1024 "
                    f"samples at 44100 Hz (23.2 ms); remove it or regenerate it longer: every audio file of the folder "
                    f"is scored")
    assert not no_embedding
    bound = tmp_path / "bound"
    write_clips(bound, [])
    save_audio(bound / "short.wav", 0.3 * torch.randn(2, samples), rate)
    save_audio(bound / "enough.wav", 0.3 * torch.randn(2, samples + 1), rate)
    with pytest.raises(RuntimeError, match="[Pp]adding size"):
        files_mel_stats({"short": bound / "short.wav"})
    files_mel_stats({"enough": bound / "enough.wav"})  # one sample more: the STFT takes it
