"""The reference OpenL3 procedure on folders, timed: stable-audio-metrics' `extract_embeddings` (stereo, batched).

Run by bench/bench_eval.py in the reference environment (TensorFlow 2.13.1, openl3 0.4.2, kapre 0.3.7, the
unmodified stable-audio-metrics `src/openl3_fd.py`; tests/metrics/parity/README.md builds it), never in lafa's:

    REFENV/bin/python bench/_openl3_reference.py --src SRC --folder DIR [--folder DIR2] --out JSON

SRC holds `openl3/` (v0.4.2 with a random-weight `openl3_audio_mel256_music.h5` beside its models.py, as
make_fixtures.py writes it), `kapre037/kapre` and stable-audio-metrics' `src/`. Prints and writes JSON:
clips, wall and CPU seconds, frames, per folder, plus versions.
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import time

p = argparse.ArgumentParser()
p.add_argument("--src", required=True)
p.add_argument("--folder", action="append", required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--out", required=True)
args = p.parse_args()
sys.path[:0] = [args.src, os.path.join(args.src, "kapre037"), args.src]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
import soundfile as sf  # noqa: E402
from src import openl3_fd as sam  # noqa: E402

# one tiny call first (0.5 s of noise): TF graph building and model loading are not the per-clip cost
with tempfile.TemporaryDirectory() as tmp:
    sf.write(os.path.join(tmp, "w.wav"), np.random.default_rng(0).uniform(-0.5, 0.5, (22050, 2)), 44100)
    sam.extract_embeddings(os.path.join(tmp, "w.wav"), 2, 44100, "music", 0.5)
runs = []
for folder in args.folder:
    pattern = os.path.join(folder, "*.wav")
    n = len(glob.glob(pattern))
    wall, cpu = time.perf_counter(), time.process_time()
    emb = sam.extract_embeddings(pattern, 2, 44100, "music", 0.5)  # default batch_size=16, as a user runs it
    runs.append(
        {
            "folder": folder,
            "clips": n,
            "frames": len(emb),
            "dim": int(np.shape(emb[0])[0]),
            "wall_seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu,
        }
    )
clips = sum(r["clips"] for r in runs)
wall = sum(r["wall_seconds"] for r in runs)
out = {
    "procedure": "stable-audio-metrics src/openl3_fd.py extract_embeddings(channels=2, 44100, music, hop 0.5)",
    "runs": runs,
    "clips": clips,
    "wall_seconds": wall,
    "cpu_seconds": sum(r["cpu_seconds"] for r in runs),
    "clips_per_second": clips / wall,
    "threads": args.threads,
    "versions": {
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "openl3": "0.4.2 (source)",
        "kapre": "0.3.7 (source)",
    },
}
with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
print(json.dumps(out))
