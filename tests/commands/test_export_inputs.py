"""`lafa export`: a missing checkpoint and a folder as --out are one line each, exit 2, nothing written (damaged,
foreign and non-finite checkpoints: tests/faults/test_checkpoint_faults.py)."""

from lafa.errors import USER_ERROR_EXIT


def test_missing_checkpoint_and_folder_out(lafa, tmp_path):
    out = tmp_path / "vae.safetensors"
    code, _, lines = lafa("export", "--ckpt_path", tmp_path / "nope.ckpt", "--out", out)
    assert code == USER_ERROR_EXIT and lines == [
        f"lafa export: error: --ckpt_path {tmp_path / 'nope.ckpt'}: no such file; give a checkpoint written by "
        "`lafa fit --config configs/vae.yaml`, e.g. runs/vae/checkpoints/last.ckpt"]
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"")
    code, _, lines = lafa("export", "--ckpt_path", ckpt, "--out", tmp_path)
    assert code == USER_ERROR_EXIT and lines == [
        f"lafa export: error: --out {tmp_path}: is a folder; give the file to write, e.g. --out vae.safetensors"]
    code, _, lines = lafa("export", "--ckpt_path", ckpt, "--out", out, "--weights", "best")
    assert code == USER_ERROR_EXIT and lines == [
        "lafa export: error: --weights: best is not one of 'ema', 'raw'; see `lafa export --help`"]
    assert not out.exists()
