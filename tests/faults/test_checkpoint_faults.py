"""Checkpoint faults: a stored config naming code, pickles, damaged and wrong files, NaN weights.

Every malicious checkpoint here is a plain dict (no pickle payload) whose stored `lafa_config` names
`subprocess.Popen` with `shell: true` somewhere; the tests assert the command never ran (its marker file is
absent) and what the user reads: one line naming the file, where the class was named, and the fix, exit code 2.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from lafa.checkpoints import CHECKPOINT_CONFIG_KEY, load_sao_vae, save_vae_safetensors
from lafa.cli import USER_ERROR_EXIT, LafaUserError, main
from lafa.config_trust import check_config_classes, is_trusted_class_path
from lafa.models.oobleck import OobleckVAE
from lafa.stages.loading import load_autoencoder, load_stage

REPO = Path(__file__).resolve().parents[2]
TINY_VAE_STAGE = dict(model=dict(channels=2, c_mults=[1, 2], strides=[2, 2], latent_dim=4), disc_filters=2)


@contextmanager
def lightning_console_on_stderr():
    """Lightning's console handlers write where `sys.stderr` was when Lightning was first imported; in pytest that
    is the capture of whichever test imported it first (closed once that test ended: "--- Logging error ---" in
    a later one). For the duration, they write to this test's stderr, as they do to a user's terminal."""
    import lightning  # noqa: F401 (its import adds the handlers)

    handlers = [h for name in ("lightning", "lightning.fabric", "lightning.pytorch")
                for h in logging.getLogger(name).handlers if type(h) is logging.StreamHandler]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = sys.stderr  # not setStream: it would flush the old stream, which may be closed
    try:
        yield
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.stream = stream


def lafa(args: list[str], capsys) -> tuple[int, str]:
    """`lafa ARGS` in this process: (exit code, the one line lafa printed to stderr, which holds no traceback:
    Lightning's log lines included)."""
    capsys.readouterr()
    with lightning_console_on_stderr():
        code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("lafa ")]
    assert len(lines) <= 1, err
    return code, lines[0] if lines else ""


def popen(marker: Path) -> dict:
    return {"class_path": "subprocess.Popen", "init_args": {"args": f"touch {marker}", "shell": True}}


def write_ckpt(path: Path, config: dict | None, state: dict | None = None, **extra) -> Path:
    ckpt = {"state_dict": state if state is not None else {"w": torch.zeros(2)}, **extra}
    if config is not None:
        ckpt[CHECKPOINT_CONFIG_KEY] = yaml.safe_dump(config)
    torch.save(ckpt, path)
    return path


def vae_stage_config(**init_args) -> dict:
    return {"model": {"class_path": "lafa.stages.vae.VaeStage", "init_args": {**TINY_VAE_STAGE, **init_args}}}


# ---- configs are data: where a stored config may try to name code -------------------------------------------
def _malicious(marker: Path) -> dict[str, tuple[dict, str]]:
    """name -> (stored config, where the error must say the class was named)."""
    vae = vae_stage_config()
    return {
        "model": ({"model": popen(marker)}, "model.class_path"),
        "init_args_of_init_args": (
            {**vae, "data": {"class_path": "lafa.data.AudioDataModule",
                             "init_args": {"train_shards": {"class_path": "lafa.data.AudioDataModule",
                                                            "init_args": {"val_shards": popen(marker)}}}}},
            "data.init_args.train_shards.init_args.val_shards.class_path"),
        "model_init_arg": ({"model": {"class_path": "lafa.stages.vae.VaeStage",
                                      "init_args": {**TINY_VAE_STAGE, "pretrained": popen(marker)}}},
                           "model.init_args.pretrained.class_path"),
        "callback": ({**vae, "trainer": {"callbacks": [
            {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"}, popen(marker)]}},
            "trainer.callbacks[1].class_path"),
        "logger": ({**vae, "trainer": {"logger": popen(marker)}}, "trainer.logger.class_path"),
        "optimizer": ({**vae, "optimizer": popen(marker)}, "optimizer.class_path"),
        "class_shorthand": ({**vae, "trainer": {"callbacks": ["subprocess.Popen"]}}, "trainer.callbacks[0]"),
        "callable_argument": ({**vae, "trainer": {"callbacks": [
            {"class_path": "lightning.pytorch.callbacks.LambdaCallback", "init_args": {"on_fit_start": "os.system"}}]}},
            "trainer.callbacks[0].init_args.on_fit_start"),
        "function_not_class": ({"model": {"class_path": "lafa.stages.loading.load_stage",
                                          "init_args": {"ckpt_path": str(marker)}}}, "model.class_path"),
    }


CASES = list(_malicious(Path("m")))


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: the stored Popen arguments do run a shell command when called (so an absent marker means
    lafa never called them)."""
    marker = tmp_path / "marker"
    spec = popen(marker)
    subprocess.Popen(**spec["init_args"]).wait()
    assert marker.exists()


@pytest.mark.parametrize("case", CASES)
def test_lafa_test_refuses_a_config_naming_code(tmp_path: Path, case: str, capsys) -> None:
    marker = tmp_path / "marker"
    config, where = _malicious(marker)[case]
    ckpt = write_ckpt(tmp_path / "evil.ckpt", config)
    code, line = lafa(["test", "--ckpt_path", str(ckpt)], capsys)
    assert code == USER_ERROR_EXIT
    assert line.startswith(f"lafa test: error: {ckpt}: its stored config names {where} = ")
    assert "nothing was imported or run" in line and "LAFA_TRUSTED_CLASSES=" in line
    assert not marker.exists()


@pytest.mark.parametrize("case", CASES)
def test_loaders_refuse_a_config_naming_code(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "marker"
    config, where = _malicious(marker)[case]
    ckpt = write_ckpt(tmp_path / "evil.ckpt", config)
    for load in (load_stage, load_autoencoder):
        with pytest.raises(LafaUserError, match=f"its stored config names {re.escape(where)} = "):
            load(ckpt)
    assert not marker.exists()


def test_encode_generate_and_a_lafa_fit_refuse_it(tmp_path: Path, capsys) -> None:
    """The three routes of the report: `lafa encode`, `lafa generate`, and a LAFA stage given it as vae_ckpt."""
    from lafa.stages.lafa import LafaStage

    marker = tmp_path / "marker"
    ckpt = write_ckpt(tmp_path / "evil.ckpt", {"model": popen(marker)})
    (tmp_path / "x.tar").write_bytes(b"")  # a shard that exists: encode checks its shards before the checkpoint
    code, line = lafa(["encode", "--ckpt_path", str(ckpt), "--shards", str(tmp_path / "x.tar"),
                       "--out", str(tmp_path / "out")], capsys)
    assert code == USER_ERROR_EXIT and "model.class_path = 'subprocess.Popen'" in line
    code, line = lafa(["generate", "--ckpt_path", str(ckpt), "--prompt", "rain", "--out", str(tmp_path / "a.wav")],
                      capsys)
    assert code == USER_ERROR_EXIT and "model.class_path = 'subprocess.Popen'" in line
    with pytest.raises(LafaUserError, match="model.class_path = 'subprocess.Popen'"):
        LafaStage(vae_ckpt=str(ckpt))
    assert not marker.exists()


def test_lightning_hyperparameters_route_is_checked_too(tmp_path: Path, capsys) -> None:
    """A checkpoint without a lafa config: Lightning's CLI would read `hyper_parameters._class_path`."""
    marker = tmp_path / "marker"
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "lafa.stages.vae.VaeStage"}}))
    for hparams, where in (({"_class_path": "subprocess.Popen", "args": f"touch {marker}", "shell": True},
                            "_class_path"),
                           ({"_instantiator": "os.system", "lr": 1.0}, "_instantiator")):
        ckpt = write_ckpt(tmp_path / "evil.ckpt", None, hyper_parameters=hparams)
        code, line = lafa(["test", "--ckpt_path", str(ckpt), "--config", str(config)], capsys)
        assert code == USER_ERROR_EXIT and f"its stored config names {where} = " in line
    assert not marker.exists()


def test_shipped_configs_and_user_trust() -> None:
    """Every class the shipped configs name is trusted; the user's own classes only through the environment."""
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        if isinstance(config, dict) and "runs" not in config:  # studies are not stage configs
            check_config_classes(config, path)
    assert is_trusted_class_path("lafa.stages.dit.DitStage")
    assert is_trusted_class_path("lightning.pytorch.callbacks.ModelCheckpoint")
    for untrusted in ("subprocess.Popen", "os.system", "builtins.eval", "lafa.commands.export.main", "Popen",
                      "lafa.stagesX.Evil", "lightning.pytorch.cli.LightningCLI"):
        assert not is_trusted_class_path(untrusted), untrusted
    os.environ["LAFA_TRUSTED_CLASSES"] = "mypkg, other.mod.Cls"
    try:
        assert is_trusted_class_path("mypkg.models.Stage") and is_trusted_class_path("other.mod.Cls")
        assert not is_trusted_class_path("mypkgevil.X") and not is_trusted_class_path("other.mod.Other")
    finally:
        del os.environ["LAFA_TRUSTED_CLASSES"]


# ---- pickles, damaged and foreign files: one line naming the file and the fix --------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_damaged_and_foreign_checkpoints(tmp_path: Path, capsys) -> None:
    good = write_ckpt(tmp_path / "good.ckpt", vae_stage_config(), state={"w": torch.randn(4096)})
    data = good.read_bytes()
    marker = tmp_path / "marker"
    files = {
        "truncated": (data[: len(data) // 2], "is truncated or damaged"),
        "empty": (b"", "is empty (0 bytes)"),
        "text": (b"not a checkpoint\n" * 20, "is not a PyTorch checkpoint"),
        "wav": (b"RIFF" + b"\0" * 200, "is not a PyTorch checkpoint"),
    }
    for name, (content, says) in files.items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(content)
        for command in (["test", "--ckpt_path", str(path)], ["export", "--ckpt_path", str(path), "--out", "x"]):
            code, line = lafa(command, capsys)
            assert code == USER_ERROR_EXIT, (name, command)
            assert line.startswith(f"lafa {command[0]}: error: {path} {says}"), line
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "x": _Payload(marker)}, pickled)
    code, line = lafa(["test", "--ckpt_path", str(pickled)], capsys)
    assert code == USER_ERROR_EXIT and "holds pickled Python objects besides tensors" in line
    assert not marker.exists()
    code, line = lafa(["test", "--ckpt_path", str(tmp_path / "nowhere.ckpt")], capsys)
    assert code == USER_ERROR_EXIT and line == (f"lafa test: error: --ckpt_path {tmp_path / 'nowhere.ckpt'}: no such "
                                                "file; give a .ckpt written by `lafa fit` (e.g. "
                                                "runs/<stage>/checkpoints/last.ckpt)")


def test_wrong_stage_is_named(tmp_path: Path, capsys) -> None:
    """A DiT checkpoint given where a VAE is needed: export, encode, a LAFA fit's vae_ckpt, a DiT's autoencoder."""
    dit = write_ckpt(tmp_path / "dit.ckpt", {"model": {"class_path": "lafa.stages.dit.DitStage", "init_args": {}}},
                     state={"model.x": torch.zeros(2)})
    code, line = lafa(["export", "--ckpt_path", str(dit), "--out", str(tmp_path / "v.safetensors")], capsys)
    assert code == USER_ERROR_EXIT
    assert line.startswith(f"lafa export: error: {dit} is a DitStage checkpoint; lafa export writes a VAE stage's")
    assert not (tmp_path / "v.safetensors").exists()
    (tmp_path / "x.tar").write_bytes(b"")  # a shard that exists: encode checks its shards before the checkpoint
    code, line = lafa(["encode", "--ckpt_path", str(dit), "--shards", str(tmp_path / "x.tar"), "--out",
                       str(tmp_path / "out")], capsys)
    assert code == USER_ERROR_EXIT and f"{dit} is a DitStage checkpoint, not an autoencoder: give a VAE" in line
    config = tmp_path / "lafa.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "lafa.stages.lafa.LafaStage",
                                                "init_args": {"vae_ckpt": str(dit)}},
                                      "data": {"class_path": "tests.cli_fixtures.LineData"},
                                      "trainer": {"max_steps": 1, "logger": False, "accelerator": "cpu"}}))
    code, line = lafa(["fit", "--config", str(config)], capsys)  # the error comes from inside jsonargparse
    assert code == USER_ERROR_EXIT and line.startswith(f"lafa fit: error: {dit} is a DitStage checkpoint")


def test_missing_damaged_and_partial_weights(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    vae = OobleckVAE(channels=2, c_mults=(1, 2), strides=(2, 2), latent_dim=64)
    full = save_vae_safetensors(vae, tmp_path / "vae.safetensors")
    state = dict(vae.state_dict())
    del state["encoder.layers.1.layers.0.layers.0.alpha"]
    partial = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(full.read_bytes()[:-100])
    missing = tmp_path / "missing.safetensors"
    for path, says in ((partial, f"{partial} does not match the OobleckVAE the config builds; missing keys (1): "
                                 "encoder.layers.1.layers.0.layers.0.alpha; pass the VAE's own weights file"),
                       (truncated, f"{truncated} is truncated or not a safetensors file")):
        (tmp_path / "x.tar").write_bytes(b"")  # a shard that exists: encode checks its shards first
        code, line = lafa(["encode", "--ckpt_path", str(path), "--shards", str(tmp_path / "x.tar"), "--out",
                           str(tmp_path / "out")], capsys)
        assert code == USER_ERROR_EXIT and line.startswith(f"lafa encode: error: {says}"), line
    with pytest.raises(FileNotFoundError) as err:
        load_autoencoder(missing)
    assert isinstance(err.value, LafaUserError) and str(err.value).startswith(f"autoencoder file not found: {missing}")
    config = tmp_path / "lafa.yaml"  # missing weights inside a fit: named by the stage that needs them
    config.write_text(yaml.safe_dump({"model": {"class_path": "lafa.stages.lafa.LafaStage",
                                                "init_args": {"vae_ckpt": str(missing)}},
                                      "data": {"class_path": "tests.cli_fixtures.LineData"},
                                      "trainer": {"max_steps": 1, "logger": False, "accelerator": "cpu"}}))
    code, line = lafa(["fit", "--config", str(config)], capsys)
    assert code == USER_ERROR_EXIT and line.startswith(f"lafa fit: error: autoencoder file not found: {missing}")


# ---- non-finite weights -------------------------------------------------------------------------------------
def _vae_stage_checkpoint(path: Path, poison: str | None = None) -> Path:
    from lafa.stages.vae import VaeStage

    torch.manual_seed(0)
    state = VaeStage(**TINY_VAE_STAGE).state_dict()
    if poison:
        state[poison] = state[poison].clone()
        state[poison].view(-1)[0] = float("nan")
    return write_ckpt(path, vae_stage_config(), state=state, global_step=2)


def test_export_refuses_nonfinite_weights_and_writes_nothing(tmp_path: Path, capsys) -> None:
    clean = _vae_stage_checkpoint(tmp_path / "clean.ckpt")
    out = tmp_path / "clean.safetensors"
    assert lafa(["export", "--ckpt_path", str(clean), "--out", str(out)], capsys)[0] == 0  # control
    assert out.exists()
    bad = _vae_stage_checkpoint(tmp_path / "nan.ckpt", poison="vae.decoder.layers.0.weight_v")
    out = tmp_path / "nan.safetensors"
    code, line = lafa(["export", "--ckpt_path", str(bad), "--out", str(out)], capsys)
    assert code == USER_ERROR_EXIT
    assert line.startswith(f"lafa export: error: {bad} holds non-finite weights (NaN or inf) in 1 of ")
    assert "vae.decoder.layers.0.weight_v" in line and "use an earlier checkpoint" in line
    assert not out.exists()


def test_every_loader_refuses_nonfinite_weights(tmp_path: Path, capsys) -> None:
    bad = _vae_stage_checkpoint(tmp_path / "nan.ckpt", poison="vae.encoder.layers.0.weight_v")
    for load in (load_stage, load_autoencoder):
        with pytest.raises(LafaUserError, match=r"nan.ckpt holds non-finite weights \(NaN or inf\) in 1 of \d+ tensors: "
                                                r"vae.encoder.layers.0.weight_v"):
            load(bad)
    code, line = lafa(["test", "--ckpt_path", str(bad)], capsys)
    assert code == USER_ERROR_EXIT and "vae.encoder.layers.0.weight_v" in line
    torch.manual_seed(0)
    vae = OobleckVAE(channels=2, c_mults=(1, 2), strides=(2, 2), latent_dim=4)
    state = {k: v.clone() for k, v in vae.state_dict().items()}
    state["decoder.layers.0.weight_g"].fill_(float("inf"))
    path = save_vae_safetensors(state, tmp_path / "inf.safetensors")
    with pytest.raises(LafaUserError, match="inf.safetensors holds non-finite weights .* decoder.layers.0.weight_g"):
        load_sao_vae(path, latent_dim=4)
