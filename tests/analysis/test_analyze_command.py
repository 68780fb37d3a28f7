"""`lafa analyze` end to end: tiny shards and two checkpoints made here, report and figures checked."""

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from analysis_doubles import FrameProjectionStage, write_checkpoint
from matplotlib.image import imread

from lafa.analysis.locality import lpi
from lafa.commands.analyze import main
from lafa.commands.analyze_argv import normalise_argv
from lafa.errors import LafaUserError

SR = 8000


def write_shard(path, clips: int, seconds: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w") as tar:
        for i in range(clips):
            n = int(seconds * SR) - 3000 * i  # clips of different lengths
            t = np.arange(n) / SR
            mono = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(n)
            buf = io.BytesIO()
            sf.write(buf, np.stack([mono, 0.5 * mono], 1).astype(np.float32), SR, format="FLAC")
            for name, data in ((f"clip{i:03d}.flac", buf.getvalue()),
                               (f"clip{i:03d}.json", json.dumps({"id": str(i)}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analyze")
    write_shard(tmp / "val-000000.tar", 3, 2.0)
    write_shard(tmp / "val-000001.tar", 3, 2.0, seed=1)
    write_checkpoint(tmp / "plain.ckpt", seed=1)
    write_checkpoint(tmp / "local.ckpt", seed=2, duplicate_pairs=True)
    stage_config = tmp / "stage.yaml"  # a stage config: --data defaults to its val shards
    stage_config.write_text(yaml.safe_dump({"data": {"class_path": "lafa.data.AudioDataModule", "init_args": {
        "val_shards": str(tmp / "val-{000000..000001}.tar")}}}))
    # the README's form: two --ckpt_path, one --label naming the second; the first is labelled by its file
    argv = ["--ckpt_path", str(tmp / "plain.ckpt"), "--ckpt_path", str(tmp / "local.ckpt"), "--label", "local",
            "--config", str(stage_config), "--num_clips", "5", "--seconds", "1.5",
            "--out", str(tmp / "out"), "--analysis.window", "16", "--analysis.hop", "8", "--analysis.min_clips", "2",
            "--mel.n_fft", "128", "--mel.hop_length", "16", "--mel.n_mels", "16", "--ablation_clips", "1",
            "--ablation_seconds", "0.5", "--device", "cpu"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAFA_TRUSTED_CLASSES", "analysis_doubles")  # the test double a stored config may name
        assert main(argv) == 0
    return tmp, json.loads((tmp / "out" / "report.json").read_text())


def test_report_has_every_representation_and_settings(analyzed):
    _, report = analyzed
    assert set(report["summary"]) == {"mel", "plain", "local"}
    assert report["settings"]["num_clips"] == 5 and report["settings"]["window"] == 16
    assert report["settings"]["mel"]["n_mels"] == 16
    assert report["settings"]["data"].endswith("val-{000000..000001}.tar")
    rep = report["representations"]["plain"]
    assert rep["channels"] == 8 and rep["clips"] == 5
    # clips of 2.0, 1.625, 1.25, 2.0, 1.625 s cropped to 1.5 s -> frames of 16 samples at 8 kHz
    assert rep["samples"] == (4 * 12000 + 10000) // 16
    assert len(report["ablation"]["plain"][0]["energy"]) == 8


def test_duplicated_channels_score_lpi_one_independent_projection_lower(analyzed):
    _, report = analyzed
    assert report["summary"]["local"]["lpi"] == pytest.approx(1.0, abs=1e-3)
    assert report["summary"]["plain"]["lpi"] < 0.9


def test_latent_lpi_matches_direct_read_and_encode(analyzed):
    """Shards read with tarfile, clips encoded one by one (no batch padding): same LPI as the report."""
    tmp, report = analyzed
    ae = FrameProjectionStage(sample_rate=SR, seed=1).as_autoencoder()
    latents = []
    for shard in ("val-000000.tar", "val-000001.tar"):
        with tarfile.open(tmp / shard) as tar:
            for member in sorted(m.name for m in tar.getmembers() if m.name.endswith(".flac")):
                data, _ = sf.read(io.BytesIO(tar.extractfile(member).read()), dtype="float32", always_2d=True)
                latents.append(ae.encode(torch.from_numpy(data.T.copy())[None, :, :12000])[0])
    latents = latents[:5]
    assert report["representations"]["plain"]["neighbour_radius"] == 1  # ceil(0.06 * 8)
    assert report["summary"]["plain"]["lpi"] == pytest.approx(lpi(latents), abs=1e-9)


def test_report_holds_the_controls_with_intervals(analyzed):
    _, report = analyzed
    for label in ("mel", "plain", "local"):
        summary, controls = report["summary"][label], report["representations"][label]["controls"]
        assert summary["lpi_excess"] == pytest.approx(summary["lpi"] - summary["lpi_permuted"])
        assert controls["lpi"]["value"] == pytest.approx(summary["lpi"], abs=1e-9)
        low, high = summary["intervals"]["lpi"]
        assert low <= summary["lpi"] <= high
        assert len(controls["lpi_permuted"]["values"]) == report["settings"]["permutations"] == 20
    # duplicated pairs are local (each channel's twin is its neighbour); a random order loses that
    assert report["summary"]["local"]["lpi_excess"] > 0.1
    assert report["summary"]["local"]["intervals"]["lpi_excess"][0] > 0


def test_figures_written(analyzed):
    tmp, report = analyzed
    names = {"psd", "correlation", "permutation", "eigen", "ablation_plain_0", "ablation_local_0"}
    assert names <= set(report["figures"])
    for name in names:
        image = imread(report["figures"][name])
        assert image.ndim == 3 and float(image[..., :3].std()) > 0.01


def test_repeated_flags_are_merged_and_stage_configs_recognised(tmp_path):
    stage = tmp_path / "stage.yaml"
    stage.write_text("model:\n  class_path: x\n")
    own = tmp_path / "own.yaml"
    own.write_text("num_clips: 3\n")
    argv = normalise_argv(["--config", str(stage), "--ckpt_path", "a", "--label", "x", "--config", str(own),
                           "--ckpt_path=b", "--label", "y", "--audio", "m1", "--audio=m2", "--audio", "m3"])
    assert argv == ["--stage_config", str(stage), "--config", str(own),
                    "--ckpt_path", "a", "b", "--label", "x", "y", "--audio", "m1", "m2", "m3"]


def test_labels_default_from_the_paths_and_name_the_path_before_them():
    vae, lafa = "runs/demo/vae/checkpoints/last.ckpt", "runs/demo/lafa/checkpoints/last.ckpt"
    assert normalise_argv(["--ckpt_path", vae, "--ckpt_path", lafa, "--label", "mine"])[-3:] == ["--label", "vae", "mine"]
    assert normalise_argv(["--ckpt_path", vae, lafa])[-2:] == ["vae", "lafa"]  # the run folders
    assert normalise_argv(["--ckpt_path", vae, "a/b.ckpt", "--label", "x", "y"])[-2:] == ["x", "y"]
    # two files of one run: the run folder, then the file's stem
    same = normalise_argv(["--ckpt_path", vae, "runs/demo/vae/checkpoints/epoch=3.ckpt"])
    assert same[-2:] == ["vae-last", "vae-epoch=3"]
    assert normalise_argv(["--ckpt_path", "x/mel.ckpt"])[-1] == "mel-mel"  # never 'mel'


@pytest.mark.parametrize("argv, message", [
    (["--ckpt_path", "a.ckpt", "b.ckpt", "--label", "x"],
     r"--label x: 1 label\(s\) for the 2 path\(s\) of the --ckpt_path before it \(a.ckpt b.ckpt\)"),
    (["--label", "x", "--ckpt_path", "a.ckpt"], "--label x: no --ckpt_path before it"),
    (["--ckpt_path", "a.ckpt", "--label", "x", "--label", "y"], "--label y: no --ckpt_path before it"),
    (["--num_clips", "3", "--num_clips=5"], r"--num_clips: given twice \('3', then '5'\); give it once"),
    (["--analysis.window", "8", "--analysis.window", "8"], "--analysis.window: given twice"),
])
def test_ambiguous_or_repeated_options_are_refused(argv, message):
    with pytest.raises(LafaUserError, match=message):
        normalise_argv(argv)


@pytest.mark.parametrize("argv, message", [
    (["--ckpt_path", "a.ckpt", "--label", "mel"], "not 'mel'"),
    (["--ckpt_path", "a.ckpt"], "pass --data"),
])
def test_bad_arguments_are_named(tmp_path, argv, message):
    with pytest.raises(LafaUserError, match=message):
        main([*argv, "--out", str(tmp_path)])


def test_a_repeated_option_is_one_line_and_exit_2_from_the_cli(tmp_path, capsys):
    from lafa.cli import main as lafa_main

    assert lafa_main(["analyze", "--audio", str(tmp_path), "--num_clips", "3", "--num_clips", "4",
                      "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lafa analyze: error: --num_clips: given twice ('3', then '4'); give it once"]
