"""The README's commands stay true (issue 25): every command of every ```bash block of README.md runs, and every
figure its prose states is checked against a file the project writes or ships.

Commands run in a scratch folder laid out like a clone (`configs/` linked, the demo corpus built there by
`python -m data_prep demo`, the same as `make shards`), in README order, each in its *test-size form*:
`TEST_FORM` maps a README command to what is run instead where the README's own is large:
- `make demo` runs the Makefile's own demo recipe, read from the Makefile, line by line, with every `lafa fit`
  cut to a few steps (`FIT_STEPS`, with last.ckpt written at the last);
- a paper-scale `lafa fit --config configs/X.yaml` is checked to parse alone (`--print_config`) where make demo
  trained the same config at tiny size; the DiT variants the demo does not train (`dit_sao_rf`, `dit_etta`) also
  train a few steps with their tiny overlays;
- paths of paper-scale runs (`runs/lafa/...`, `data/shards/...`) become the demo's (`runs/demo/...`,
  `data/demo/shards/...`), `~/Music/album` becomes the demo corpus's raw music folder, `models/encodec_24khz` a
  tiny random transformers EncodecModel saved there;
- a study is planned (`--plan`: its configs are checked and its fit commands printed), not run (it is nine fits);
- `make test` is the suite that runs this test, so it is not run from here.
A README command without an entry in TEST_FORM fails `test_every_readme_command_has_a_test_form`, so a new
command cannot slip in untested. The chain runs in this process (no interpreter start per command) and takes
a few minutes of CPU: it is marked slow and runs in CI (`make test`).

Figures: `FIGURES` lists each number the README's prose states (outside code), with where it comes from;
`test_every_readme_figure_has_a_source` fails on a number with no entry (add its source, or remove it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

# `lafa fit` at test size: a few steps, validated at the last, and last.ckpt written there. The VAE and LAFA tiny
# configs write last.ckpt every 4 and 10 steps; the tiny DiTs every 100, so their last callback (the
# ModelCheckpoint: jsonargparse's `callbacks.init_args` sets the last one of the list) is told 4.
FIT_STEPS = {"configs/tiny/vae.yaml": 4, "configs/tiny/lafa.yaml": 10, "configs/tiny/dit_sao.yaml": 4}


def _fit_tiny(config_args: str) -> str:
    overlay = next(c for c in FIT_STEPS if c in config_args)
    steps = FIT_STEPS[overlay]
    extra = f" --trainer.callbacks.init_args.every_n_train_steps {steps}" if "dit_sao" in overlay else ""
    return f"lafa fit {config_args} --trainer.max_steps {steps} --trainer.val_check_interval {steps}{extra}"


DEMO = "@make demo"  # the Makefile's demo recipe, read from the Makefile (see _make_recipe)
TEST_FORM: dict[str, list[str] | str] = {
    "make demo": [DEMO],
    "make test": "not run: `make test` is the suite this test belongs to",
    ".venv/bin/python -m data_prep build --out data/mine --folder ~/Music/album --licenses CC0 CC-BY CC-BY-SA":
        ["python -m data_prep build --out data/mine --folder data/demo/raw/music --licenses CC0 CC-BY CC-BY-SA"],
    ".venv/bin/lafa analyze --audio ~/Music/album --out runs/music-mel":
        ["lafa analyze --audio data/demo/raw/music --out runs/music-mel"],
    ".venv/bin/lafa analyze --audio ~/Music/album --ckpt_path models/encodec_24khz --label encodec "
    "--ckpt_path runs/demo/vae/checkpoints/last.ckpt --label vae --out runs/codecs":
        ["@tiny encodec models/encodec_24khz",
         "lafa analyze --audio data/demo/raw/music --ckpt_path models/encodec_24khz --label encodec "
         "--ckpt_path runs/demo/vae/checkpoints/last.ckpt --label vae --analysis.window 16 --analysis.hop 16 "
         "--out runs/codecs"],  # the demo clips are too short for a 64- or 32-frame window here
    "make shards": [],  # the fixture built the demo corpus with `make shards`' own command
    # the paper-scale stage configs parse alone; at tiny size the same configs were trained by make demo's recipe
    "lafa fit --config configs/vae.yaml": ["lafa fit --config configs/vae.yaml --print_config"],
    "lafa fit --config configs/lafa.yaml": ["lafa fit --config configs/lafa.yaml --print_config"],
    "lafa analyze --ckpt_path runs/lafa/checkpoints/last.ckpt --data 'data/shards/val-*.tar' --out runs/analysis":
        ["lafa analyze --ckpt_path runs/demo/lafa/checkpoints/last.ckpt --data 'data/demo/shards/val-*.tar' "
         "--num_clips 8 --out runs/analysis"],
    "lafa encode --ckpt_path runs/lafa/checkpoints/last.ckpt --shards 'data/shards/train-*.tar' --out data/latents":
        ["lafa encode --ckpt_path runs/demo/lafa/checkpoints/last.ckpt --shards 'data/demo/shards/train-000000.tar' "
         "--workers 0 --out data/latents"],
    "lafa fit --config configs/dit_sao.yaml": ["lafa fit --config configs/dit_sao.yaml --print_config"],
    "lafa fit --config configs/dit_sao_rf.yaml":  # the whole config alone parses and trains (--print_config), tiny
        ["lafa fit --config configs/dit_sao_rf.yaml --print_config",
         _fit_tiny("--config configs/dit_sao_rf.yaml --config configs/tiny/dit_sao.yaml "
                   "--config configs/tiny/dit_sao_rf.yaml")],
    "lafa fit --config configs/dit_etta.yaml":
        ["lafa fit --config configs/dit_etta.yaml --print_config",
         _fit_tiny("--config configs/dit_etta.yaml --config configs/tiny/dit_sao.yaml "
                   "--config configs/tiny/dit_etta.yaml")],
    'lafa generate --ckpt_path runs/dit_sao/checkpoints/last.ckpt --prompt "rain on a tin roof" --seconds 10 '
    "--out out.wav":
        ['lafa generate --ckpt_path runs/demo/dit/checkpoints/last.ckpt --prompt "rain on a tin roof" --seconds 2 '
         "--steps 4 --out out.wav"],
    "lafa test --ckpt_path runs/dit_sao/checkpoints/last.ckpt": ["lafa test --ckpt_path runs/demo/dit/checkpoints/last.ckpt"],
    "lafa evaluate --generated runs/dit_sao/test/generated --reference runs/dit_sao/test/reference --out eval.json":
        ["lafa evaluate --generated runs/demo/dit/test/generated --reference runs/demo/dit/test/reference "
         "--allow_random_weights --out eval.json"],
    "lafa study --config configs/studies/converge.yaml":
        ["lafa study --config configs/studies/converge.yaml --config configs/tiny/studies/converge.yaml --plan"],
    # make demo's recipe ran this exact command (at FIT_STEPS); here it is checked to parse as written
    "lafa fit --config configs/lafa.yaml --config configs/tiny/lafa.yaml":
        ["lafa fit --config configs/lafa.yaml --config configs/tiny/lafa.yaml --print_config"],
}


def readme_commands(text: str = README) -> list[str]:
    """The commands of the README's ```bash blocks, in order: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()  # no command of the README has a '#' in an argument
            if line:
                commands.append(" ".join(line.split()))
    return commands


def _make_recipe(target: str) -> list[str]:
    """The Makefile's recipe for `target` with its variables expanded (LAFA, DEMO, BIN) and @echo lines dropped."""
    text = (REPO / "Makefile").read_text()
    body = re.search(rf"^{target}:.*\n((?:\t.*\n|\s*\n)+)", text, flags=re.M).group(1)
    body = re.sub(r"\\\n\s*", "", body)
    out = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("@"):
            continue
        line = line.replace("$(LAFA)", "lafa").replace("$(DEMO)", "runs/demo").replace("$(BIN)/python", "python")
        out.append(" ".join(line.split()))
    return out


def _run_form(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run one test-form command in `cwd`: `lafa` in this process through lafa.cli.main (the console script's
    code, without a new interpreter's imports per command), `python -m data_prep` as a process; returns its exit
    code and output."""
    if command.startswith("@tiny encodec "):
        from transformers import EncodecConfig, EncodecModel

        EncodecModel(EncodecConfig(sampling_rate=8000, audio_channels=2, num_filters=4, upsampling_ratios=[4, 4],
                                   codebook_size=16, codebook_dim=8, hidden_size=8, num_lstm_layers=1,
                                   target_bandwidths=[1.0])).save_pretrained(cwd / command.split()[-1])
        return subprocess.CompletedProcess(command, 0, "", "")
    argv = shlex.split(command)
    if argv[:3] == ["python", "-m", "data_prep"]:  # its own interpreter: a fork pool after torch's threads can hang
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=900)
    if argv[0] != "lafa":
        raise AssertionError(f"no runner for {command!r}")
    from lafa.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = int(main(argv[1:]) or 0)
            except SystemExit as e:  # --print_config and --help end this way
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # noqa: BLE001 (a traceback is a failure the test reports)
                err.write(traceback.format_exc())
                code = 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(command, code, out.getvalue(), err.getvalue())


def test_every_readme_command_has_a_test_form() -> None:
    commands = readme_commands()
    assert "lafa fit --config configs/dit_sao_rf.yaml" in commands  # the stage list is a command block
    missing = [c for c in commands if c not in TEST_FORM]
    assert not missing, f"README commands with no test-size form in TEST_FORM: {missing}"
    stale = [c for c in TEST_FORM if c not in commands]
    assert not stale, f"TEST_FORM entries the README no longer has: {stale}"


def test_the_demo_recipe_is_what_the_makefile_runs() -> None:
    recipe = _make_recipe("demo")
    assert recipe[0] == "lafa fit --config configs/vae.yaml --config configs/tiny/vae.yaml"
    assert any(line.startswith("lafa evaluate ") for line in recipe)


def test_whole_dit_configs_differ_from_dit_sao_only_where_they_say() -> None:
    """dit_sao_rf.yaml and dit_etta.yaml are whole configs (each runs alone): dit_sao.yaml plus their change."""
    import yaml

    def flat(d, prefix=""):
        if isinstance(d, dict):
            return {k: v for key, val in d.items() for k, v in flat(val, f"{prefix}{key}.").items()}
        if isinstance(d, list):
            return {k: v for i, val in enumerate(d) for k, v in flat(val, f"{prefix}{i}.").items()}
        return {prefix[:-1]: d}

    base = flat(yaml.safe_load((REPO / "configs/dit_sao.yaml").read_text()))
    for name, changed in (("dit_sao_rf", {"model.init_args.objective": "rf", "model.init_args.sampler": "euler"}),
                          ("dit_etta", {"model.init_args.model.preset": "etta"})):
        other = flat(yaml.safe_load((REPO / f"configs/{name}.yaml").read_text()))
        assert set(other) == set(base), name
        diff = {k: other[k] for k in base if other[k] != base[k]}
        folders = {k: v for k, v in diff.items() if isinstance(v, str) and v.startswith(f"runs/{name}")}
        assert {k: v for k, v in diff.items() if k not in folders} == changed, name
        assert all(base[k].replace("runs/dit_sao", f"runs/{name}") == v for k, v in folders.items()), name


# --- the chain -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> tuple[Path, list[tuple[str, str, subprocess.CompletedProcess]]]:
    """A scratch clone (configs linked, the demo corpus built) where every README command ran in its test form."""
    root = tmp_path_factory.mktemp("readme")
    (root / "configs").symlink_to(REPO / "configs")
    shards = _run_form(_make_recipe("data/demo/shards/manifest.json")[0], root)  # `make shards`' own command
    assert shards.returncode == 0, shards.stderr[-3000:]
    results = []
    for command in readme_commands():
        form = TEST_FORM[command]
        if isinstance(form, str):
            continue
        for line in form:
            for run in (_make_recipe("demo") if line == DEMO else [line]):
                if run.startswith("lafa fit ") and "--trainer.max_steps" not in run and "--print_config" not in run:
                    run = _fit_tiny(run.removeprefix("lafa fit "))
                proc = _run_form(run, root)
                results.append((command, run, proc))
                if proc.returncode != 0:
                    return root, results
    return root, results


@pytest.mark.slow
def test_every_readme_command_runs(readme_run) -> None:
    _, results = readme_run
    for command, run, proc in results:
        assert proc.returncode == 0, f"README `{command}` as `{run}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    ran = {command for command, _, _ in results}
    assert ran == {c for c in readme_commands() if not isinstance(TEST_FORM[c], str) and TEST_FORM[c]}


# --- figures -------------------------------------------------------------------------------------------------


def _demo_report(root: Path) -> dict:
    return json.loads((root / "runs/demo/analysis/report.json").read_text())


def _lock_pin(name: str) -> str:
    return re.search(rf"^{name}==(\S+)", (REPO / "requirements.lock").read_text(), flags=re.M).group(1)


def _source_default(path: str, pattern: str) -> str:
    return re.search(pattern, (REPO / path).read_text(), flags=re.M).group(1)


# README text -> (where the figure comes from, a check that needs no run) or (source, a check on the README run)
STATIC_FIGURES = {
    "converge 2-4x faster": ("the paper's abstract (quoted, not measured by lafa)", None),
    "paper's 2-4x at scale": ("the paper's claim (quoted)", None),
    "stable-audio-tools 0.0.20": ("bench/setup_reference.sh",
                                  lambda: "stable-audio-tools==0.0.20" in (REPO / "bench/setup_reference.sh").read_text()),
    "exit code 2": ("lafa.errors.USER_ERROR_EXIT", lambda: __import__("lafa.errors").errors.USER_ERROR_EXIT == 2),
    "torch 2.14.1": ("requirements.lock", lambda: _lock_pin("torch") == "2.14.1"),
    "torchaudio 2.11.0": ("requirements.lock", lambda: _lock_pin("torchaudio") == "2.11.0"),
    "Stable Audio Open 1.0": ("a model's name", None),
    "kill -9": ("a signal's name", None),
    "lambda = 0.06": ("lafa.analysis.latent_report.AnalysisSettings.lam",
                      lambda: _source_default("lafa/analysis/latent_report.py", r"^\s+lam: float = ([\d.]+)") == "0.06"),
    "one 30 s chunk": ("data_prep build's --chunk_seconds default",
                       lambda: "_common(b, 30.0," in (REPO / "data_prep/__main__.py").read_text()),
    "44.1 kHz": ("lafa.audio.SAMPLE_RATE", lambda: __import__("lafa.audio").audio.SAMPLE_RATE == 44100),
    "16-bit wav": ("data_prep's --flac_subtype default PCM_16",
                   lambda: 'default="PCM_16"' in (REPO / "data_prep/__main__.py").read_text()
                   or '"--flac_subtype", default="PCM_16"' in (REPO / "data_prep/__main__.py").read_text()),
    "band above 22 kHz": ("half of lafa.audio.SAMPLE_RATE (22.05 kHz)",
                          lambda: __import__("lafa.audio").audio.SAMPLE_RATE // 2000 == 22),
}
# README text -> (the file of the README run it comes from, a function of that file's data returning the figure)
DEMO_FIGURES = {
    "LPI of 0.945": ("runs/demo/analysis/report.json", lambda r: r["summary"]["mel"]["lpi"]),
    "drops only to 0.827": ("runs/demo/analysis/report.json", lambda r: r["summary"]["mel"]["lpi_permuted"]),
    "(excess 0.118)": ("runs/demo/analysis/report.json", lambda r: r["summary"]["mel"]["lpi_excess"]),
}


def _prose(text: str = README) -> str:
    """The README without its code blocks, inline code and link targets."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    return re.sub(r"`[^`]*`", " ", text)


def test_every_readme_figure_has_a_source() -> None:
    prose = " ".join(_prose().split())
    for snippet in [*STATIC_FIGURES, *DEMO_FIGURES]:
        assert snippet in prose, f"FIGURES entry {snippet!r} is no longer in the README"
        prose = prose.replace(snippet, " ")
    unsourced = re.findall(r"(?<![A-Za-z_\d.])\d+(?:[.,]\d+)*(?:x|%)?", prose)
    assert not unsourced, f"README figures with no source in tests/test_readme.py: {unsourced}"
    for snippet, (source, check) in STATIC_FIGURES.items():
        assert check is None or check(), f"README says {snippet!r}; {source} disagrees"


@pytest.mark.slow
def test_readme_demo_figures_match_a_fresh_demo(readme_run) -> None:
    root, _ = readme_run
    report = _demo_report(root)
    for snippet, (source, figure) in DEMO_FIGURES.items():
        stated = float(re.search(r"\d+\.\d+", snippet).group())
        decimals = len(str(stated).split(".")[1])
        assert round(figure(report), decimals) == stated, f"README says {snippet!r}; {source} has {figure(report)}"
