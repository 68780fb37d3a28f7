"""bench/bench_models.py sizes its cases to the machine (issue 25): memory checked before each case from a
measured smaller case, a case that cannot fit skipped with why, a reference worker that is killed reported as
a failed case with its signal (no BrokenPipeError), and the run's length estimated up front.

No stable-audio-tools here: a fake worker speaks the worker's protocol, and a fake VAE stands in for lafa's."""

import json
import signal
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_models  # noqa: E402
import sizing  # noqa: E402

FAKE_WORKER = textwrap.dedent('''
    import json, os, signal, sys
    import torch
    REPLY = "@@reply "
    BYTES_PER_FRAME = float(sys.argv[1])  # what this worker reports a call adds, per frame x batch
    DIE_ON = {int(f) for f in sys.argv[2].split(",") if f}  # time_vae of these frame counts kills the worker
    LOG = sys.argv[3]
    def inputs(frames, batch, seed):
        g = torch.Generator().manual_seed(seed)
        return 0.3 * torch.randn(batch, 2, frames * 2048, generator=g), torch.randn(batch, 64, frames, generator=g)
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        with open(LOG, "a") as f:
            f.write(cmd + "\\n")
        if cmd == "quit":
            break
        if cmd == "time_vae" and msg["frames"] in DIE_ON:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does
        reply = {"ok": True}
        if cmd == "vae_matrix_outputs":
            audio, z = inputs(msg["frames"], msg["batch"], msg["seed"])
            torch.save({"encoder_raw": audio[:, :, ::2048], "decoded": z}, msg["path"])
            reply = {"saved": msg["path"], "added_bytes": int(BYTES_PER_FRAME * msg["frames"] * msg["batch"])}
        elif cmd == "time_vae":
            reply = {"cpu": [0.01], "wall": [0.01], "added_bytes": int(BYTES_PER_FRAME * msg["frames"] * msg["batch"])}
        print(REPLY + json.dumps(reply), flush=True)
''')


class FakeVAE:
    """lafa's side of the matrix, cheap: encode/decode that agree with the fake worker's outputs."""

    downsampling_ratio = 2048

    def parameters(self):  # InferenceVAE reads the device from here; a fake VAE runs its plain calls
        return iter([torch.zeros(1)])

    def eval(self):
        return self

    def encoder(self, audio):
        return audio[:, :, ::2048]

    def encode(self, audio, sample=True):
        return audio[:, :, ::2048], torch.zeros(())

    def decode(self, z):
        return z


@pytest.fixture
def worker(tmp_path):
    def start(bytes_per_frame=1e6, die_on=""):
        script = tmp_path / "fake_worker.py"
        script.write_text(FAKE_WORKER)
        log = tmp_path / "worker.log"
        return bench_models.Reference(tmp_path, 1, argv=[sys.executable, str(script), str(bytes_per_frame), die_on,
                                                         str(log)]), log
    return start


def test_a_case_that_cannot_fit_is_skipped_with_the_figures():
    model = sizing.MemoryModel()  # the measured default: 6.2 MB per frame x batch
    need = {"reference": model.need("reference", 646 * 4), "lafa": model.need("lafa", 280 * 4)}
    assert need["reference"] == pytest.approx(1.25 * 646 * 4 * 6.2e6)  # 20.0 GB for 30 s x 4, whole clip
    reason = sizing.check_case(need, available=int(8 * sizing.GIB))
    assert reason.startswith("needs reference ~18.7 GiB, lafa ~8.1 GiB") and reason.endswith("8.0 GiB available")
    assert sizing.check_case({"reference": model.need("reference", 22)}, available=int(8 * sizing.GIB)) is None
    # lafa's chunked path holds one window (256 + 24 frames) per clip, whatever the clip's length
    assert sizing.frames_held("lafa", 646, 4, 256, 24) == 4 * 280
    assert sizing.frames_held("reference", 646, 4, 256, 24) == 4 * 646
    assert sizing.frames_held("lafa", 215, 1, 256, 24) == 215


def test_a_measured_small_case_sizes_the_larger_ones():
    model = sizing.MemoryModel()
    model.observe("reference", 22, 22 * 40e6)  # measured: 40 MB per frame (the default guessed 6.2)
    assert model.need("reference", 215) == pytest.approx(1.25 * 215 * 40e6)
    model.observe("reference", 43, 43 * 10e6)  # a cheaper case later never lowers the estimate
    assert model.per_frame("reference") == pytest.approx(40e6)
    model.observe("lafa", 22, 0)  # nothing measured (no peak reset): the default stays
    assert model.per_frame("lafa") == pytest.approx(sizing.BYTES_PER_FRAME)


def test_available_memory_can_be_stated_and_is_read_from_the_kernel_otherwise():
    assert sizing.available_memory(8) == 8 * sizing.GIB
    assert 0 < sizing.available_memory() < 2**62  # MemAvailable (or a cgroup's headroom) on Linux


def test_the_estimate_scales_with_frames_rounds_and_threads():
    cases = [(1.0, 1, 22), (10.0, 4, 215)]
    sides = lambda c: ["lafa", "reference"]  # noqa: E731
    one = sizing.estimate_seconds(cases, sides, rounds=1, threads=2)
    expected = 2 * (0.035 + 0.093) * (22 + 4 * 215)  # encode + decode, both sides
    assert one == pytest.approx(expected)
    assert sizing.estimate_seconds(cases, sides, rounds=4, threads=2) == pytest.approx(4 * expected)
    assert sizing.estimate_seconds(cases, sides, rounds=1, threads=1) == pytest.approx(2 * expected)


def test_a_killed_worker_is_named_with_its_signal_never_a_broken_pipe(worker):
    ref, log = worker(die_on="5")
    assert ref("setup_vae", weights="w.pt") == {"ok": True}
    with pytest.raises(sizing.WorkerDied, match=r"reference worker killed by SIGKILL \(the kernel's out-of-memory "
                                                r"killer sends SIGKILL: see `dmesg`\) during time_vae") as died:
        ref("time_vae", op="encode", frames=5, batch=1, seed=0, reps=1)
    assert died.value.signal == "SIGKILL" and died.value.returncode == -signal.SIGKILL
    with pytest.raises(sizing.WorkerDied, match=r"killed by SIGKILL .* during time_vae"):  # writing to the dead pipe
        ref("time_vae", op="encode", frames=1, batch=1, seed=0, reps=1)
    ref.restart()  # a fresh worker, its setup replayed
    assert ref("time_vae", op="encode", frames=1, batch=1, seed=0, reps=1)["cpu"] == [0.01]
    ref.close()
    ref.close()  # closing twice, or a dead worker, raises nothing
    assert log.read_text().split() == ["setup_vae", "time_vae", "setup_vae", "time_vae", "quit"]


def test_the_matrix_reports_ok_failed_and_skipped_cases(worker, tmp_path, capsys):
    """1 s runs; 2 s: the worker is killed in it (failed, SIGKILL, the bench goes on); 10 s: the 1 s case
    measured 40 MB per frame, so 10 s needs ~10 GiB, more than the 8 GiB stated: skipped before it runs
    (with the default 6.2 MB per frame it would have fit)."""
    ref, log = worker(bytes_per_frame=40e6, die_on="43")
    args = SimpleNamespace(vae_chunk_frames=None, vae_overlap_frames=None, vae_matrix="10x1,2x1,1x1", warmup=0,
                           repeats=1, threads=2, memory_gib=8.0)
    try:
        out = bench_models.bench_vae_matrix(ref, FakeVAE(), tmp_path, args)
    finally:
        ref.close()
    cases = out["cases"]
    assert cases["vae_encode_1s_b1"]["status"] == "ok" and cases["vae_decode_1s_b1"]["status"] == "ok"
    assert cases["1s_b1_agreement"] == {"encoder_raw": 0.0, "decoded": 0.0}
    for op in ("encode", "decode"):
        failed = cases[f"vae_{op}_2s_b1"]
        assert failed["status"] == "failed" and failed["signal"] == "SIGKILL"
        assert failed["reason"].startswith("reference worker killed by SIGKILL")
        skipped = cases[f"vae_{op}_10s_b1"]
        assert skipped["status"] == "skipped" and skipped["reason"].endswith("8.0 GiB available")
        assert skipped["estimated_gib"]["reference"] == pytest.approx(1.25 * 215 * 40e6 / sizing.GIB)
    assert "10s_b1_agreement" not in cases  # never run: nothing of it reached the worker
    assert out["memory"]["bytes_per_frame"]["reference"] == pytest.approx(40e6)
    json.dumps(out)  # the report is JSON as it stands
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert "failed 2 s x 1: reference worker killed by SIGKILL" in err and "skipped 10 s x 1: needs" in err
    bench_models.print_table({"vae": {"matrix": out}})
    table = capsys.readouterr().out
    assert "vae_encode_10s_b1        skipped: needs" in table and "vae_encode_2s_b1         failed: reference" in table
