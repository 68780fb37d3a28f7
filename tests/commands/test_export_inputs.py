"""`lafa export`: a missing checkpoint, a non-empty folder or another suffix as --out are one line each, exit 2, nothing written (damaged,
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
    code, _, lines = lafa("export", "--ckpt_path", ckpt, "--out", tmp_path)  # a folder is a bundle: not over files
    assert code == USER_ERROR_EXIT and lines == [
        f"lafa export: error: --out {tmp_path}: exists and is not an empty folder or a lafa bundle; give a new folder"]
    code, _, lines = lafa("export", "--ckpt_path", ckpt, "--out", tmp_path / "vae.pt")
    assert code == USER_ERROR_EXIT and lines == [
        f"lafa export: error: --out {tmp_path / 'vae.pt'}: a .pt file is neither a bundle folder nor a .safetensors "
        "file; give a folder for a bundle, or FILE.safetensors for a VAE's weights"]
    code, _, lines = lafa("export", "--ckpt_path", ckpt, "--out", out, "--weights", "best")
    assert code == USER_ERROR_EXIT and lines == [
        "lafa export: error: --weights: best is not one of 'ema', 'raw'; see `lafa export --help`"]
    assert not out.exists()
