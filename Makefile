# lafa developer entry points. `make setup` builds .venv from requirements.lock (every version pinned, so a clone
# installs what was tested) and installs lafa itself on top; every other target uses it. `make lock` refreshes
# the lock from pyproject.toml's ranges (which stay for library users: `pip install .`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LAFA   := $(BIN)/lafa
JOBS   ?= 2
DEMO   := runs/demo
# `make shards` builds the offline demo corpus; `make shards ARGS="build --out data/shards --fma_audio ..."` a real one
ARGS   ?= demo --out data/demo

.PHONY: setup lock test shards demo study lab-study study-real-music study-real-music-gpu music gpu-check bench lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Re-resolve every pin from pyproject.toml's ranges (lafa, its [dev] and [wandb] extras); review the diff, then
# commit requirements.lock with the change that needed it.
lock: setup
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --extra dev --extra wandb --strip-extras --no-emit-find-links --no-emit-index-url \
	    --no-emit-trusted-host --upgrade --output-file requirements.lock pyproject.toml

test: setup
	$(BIN)/python -m pytest -n $(JOBS) -q tests

lint: setup
	$(BIN)/ruff check lafa data_prep tests bench

shards: setup
	$(BIN)/python -m data_prep $(ARGS)

data/demo/shards/manifest.json: | setup
	$(BIN)/python -m data_prep demo --out data/demo

# The main job end to end on the embedded default (tiny configs, the synthetic demo corpus, CPU).
demo: setup data/demo/shards/manifest.json
	$(LAFA) fit --config configs/vae.yaml --config configs/tiny/vae.yaml
	$(LAFA) test --ckpt_path $(DEMO)/vae/checkpoints/last.ckpt
	$(LAFA) fit --config configs/lafa.yaml --config configs/tiny/lafa.yaml
	$(LAFA) test --ckpt_path $(DEMO)/lafa/checkpoints/last.ckpt
	$(LAFA) analyze --ckpt_path $(DEMO)/vae/checkpoints/last.ckpt --label vae \
	    --ckpt_path $(DEMO)/lafa/checkpoints/last.ckpt --label vae_lafa \
	    --data 'data/demo/shards/val-*.tar' --num_clips 200 --analysis.window 32 --analysis.hop 32 \
	    --ablation_seconds 1 --out $(DEMO)/analysis
	$(LAFA) fit --config configs/dit_sao.yaml --config configs/tiny/dit_sao.yaml
	$(LAFA) generate --ckpt_path $(DEMO)/dit/checkpoints/last.ckpt --prompts configs/tiny/demo_prompts.txt \
	    --seconds 2 --steps 20 --cfg_scale 3 --out $(DEMO)/generated
	$(LAFA) test --ckpt_path $(DEMO)/dit/checkpoints/last.ckpt
	$(LAFA) evaluate --generated $(DEMO)/dit/test/generated --reference $(DEMO)/dit/test/reference \
	    --prompts $(DEMO)/dit/test/prompts.json --allow_random_weights --out $(DEMO)/evaluation.json
	@echo "demo done: checkpoints, TensorBoard logs, analysis figures and generated audio are under $(DEMO)/"

# The tiny `converge` study (plain VAE vs VAE + LAFA latents under the same DiT) on the demo corpus, then the
# locality control (LAFA masked vs unmasked on a decorrelated stand-in latent, 3 seeds; DiT on Y vs rotated Y).
study: setup data/demo/shards/manifest.json
	$(LAFA) study --config configs/studies/converge.yaml --config configs/tiny/studies/converge.yaml
	OMP_NUM_THREADS=1 $(LAFA) study --config configs/studies/locality_control.yaml \
	    --config configs/tiny/studies/locality_control.yaml

# The ground-truth lab's study (docs/lab.md, docs/study.md): tiny DiTs on Gaussian latents with exact loss floors
# (channel order, eigen-spectrum) and tiny LAFAs on an order-free one (does masking give it an order?), 3 seeds
lab-study: setup
	$(LAFA) study --config configs/studies/ground_truth.yaml --config configs/tiny/studies/ground_truth.yaml

# The real-music pre-test (docs/study.md "Real music"): LAFA span vs off vs prefix vs spectrum loss at matched
# reconstruction, DiTs on each; needs data/music/shards (`make music`); resumes when killed
study-real-music: setup
	OMP_NUM_THREADS=1 $(LAFA) study --config configs/studies/real_music.yaml --config configs/cpu/studies/real_music.yaml
study-real-music-gpu: setup
	$(LAFA) study --config configs/studies/real_music.yaml --config configs/gpu/studies/real_music.yaml

# Real music for the pre-tests (docs/corpus.md): installs 5 Debian soundtrack packages (as root; else prints the
# apt-get line) and shards them to data/music/shards; MUSIC_ARGS="--folder ~/Music" shards your own folder instead
MUSIC_ARGS ?=
music: setup
	$(BIN)/python -m data_prep.debian_music --out data/music $(MUSIC_ARGS)

# The check for a lent CUDA device (docs/gpu_check.md): ~8 min on one H100 -> bench/results/gpu_check.json;
# on a CPU it prints what it would run and exits 0
GPU_ARGS ?=
gpu-check: setup
	$(BIN)/python bench/gpu_check.py $(GPU_ARGS)

# Benchmarks write JSON (machine, versions, timings, ratios) to bench/results/; the model benchmark runs the
# reference stable-audio-tools 0.0.20 from an isolated install (bench/.ref-site), never from .venv.
bench: setup data/demo/shards/manifest.json
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_resample.py
	$(BIN)/python bench/bench_analysis.py
	$(BIN)/python bench/bench_precision.py
	$(BIN)/python bench/bench_eval.py --clips 3
	PY=$(BIN)/python bash bench/setup_reference.sh
	$(BIN)/python bench/bench_models.py
