"""Stage II: a text-to-audio DiT (SAO or ETTA blocks, paper Sec. 5.1; `lafa.models.dit`) on the latents of a
frozen autoencoder (docs/dit.md).

The latent space is the autoencoder's (`autoencoder_ckpt`, through `lafa.stages.loading.load_autoencoder`);
batches are audio (encoded on the fly) or pre-encoded latents (`latent` + `keep`). The frozen text encoder and
autoencoder are not part of the state dict and are shared, not copied, by EMA weight averaging. `generate()` /
`generate_samples()` are what `lafa generate`, the sample callback (`lafa.stages.dit_callbacks`) and `lafa test`
use; test scores its generated folder with `lafa.metrics.generation.evaluate_folders` (settings in `test_eval`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningModule

from lafa.audio import save_audio
from lafa.data.geometry import (
    frame_keep,
    frames_for,
    keep_from_lengths,
    real_samples,
    seconds_to_samples,
    seconds_total,
    trim,
)
from lafa.diffusion.cfg import drop_mask, guided
from lafa.diffusion.objectives import diffusion_loss, sample_t
from lafa.diffusion.samplers import sample
from lafa.errors import LafaUserError
from lafa.models.conditioners import TextConditioner
from lafa.models.dit import DIT_PRESETS, DiT, DiTConfig
from lafa.models.presets import as_mapping, build_model
from lafa.stages.checks import FD_MEL_OFF, check_crop, check_fd_mel_clips, check_fd_mel_crop, check_range
from lafa.stages.frozen import Frozen
from lafa.stages.schedules import inverse_lr_factor

TEXT_CACHE_SIZE = 64  # caption tuples kept by encode_text (fixed validation and sample prompts repeat)


def latent_shard_weights(datamodule) -> dict[str, tuple[str, str]]:
    """split -> (first local latent shard, the weights hash of the autoencoder that encoded it), for a
    LatentDataModule's shards that carry `lafa encode`'s fingerprint (a mixed corpus is refused by the DataModule)."""
    from lafa.data.latent_corpus import shard_fingerprint
    from lafa.data.stream import expand_shards

    found = {}
    for split, spec in (getattr(datamodule, "specs", None) or {}).items():
        for url in expand_shards(spec) if spec is not None else []:
            info = shard_fingerprint(url) if Path(url).is_file() else None
            if info:
                found[split] = (url, info["made_by"]["autoencoder_weights"])
                break
    return found


class DitStage(LightningModule):
    def __init__(
        self,
        # latent space
        autoencoder_ckpt: str | None = None,
        autoencoder_latent_dim: int = 64,
        latent_scale: float = 1.0,
        decode_steps: int | None = None,
        # model: lafa.models.dit.DiT's arguments and a size `preset` (DIT_PRESETS, default sao-1.0); io_channels
        # defaults to the autoencoder's latent width, text_dim is the text encoder's
        model: DiTConfig | dict | None = None,
        text_encoder: str = "t5-base",
        text_max_length: int = 128,
        compile: bool = False,
        # objective (Sec. 5.1) and guidance
        objective: str = "v",
        t_sampler: str = "uniform",
        cfg_dropout: float = 0.1,
        # optimisation (SAO: AdamW 5e-5, betas (0.9, 0.999), wd 1e-3, InverseLR)
        lr: float = 5e-5,
        betas: Sequence[float] = (0.9, 0.999),
        weight_decay: float = 1e-3,
        lr_schedule: str = "inverse",
        inv_gamma: float = 1e6,
        power: float = 0.5,
        warmup: float = 0.99,
        # evaluation and sampling
        val_t: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
        seed: int = 0,
        sample_frames: int = 0,
        sampler: str | None = None,
        steps: int = 100,
        cfg_scale: float = 7.0,
        test_eval: dict | None = None,
    ) -> None:
        super().__init__()
        check_range({"lr": (lr, ">0"), "weight_decay": (weight_decay, ">=0"), "latent_scale": (latent_scale, ">0"),
                     "cfg_dropout": (cfg_dropout, "[0,1]"), "steps": (steps, ">=1"), "inv_gamma": (inv_gamma, ">0"),
                     "warmup": (warmup, "[0,1)"), "sample_frames": (sample_frames, ">=0")})
        config = {"preset": "sao-1.0", **as_mapping(model)}
        self.save_hyperparameters(ignore=["model"])
        self.hparams["model"] = config  # plain values: checkpoints hold no config classes
        self.frozen = Frozen(text=TextConditioner(text_encoder, text_max_length), autoencoder=None, text_cache={})
        self._checked: tuple | None = None  # (stage, datamodule) whose input checks already ran in this process
        derived = {"text_dim": self.frozen.text.dim}
        if autoencoder_ckpt:
            derived["io_channels"] = latent_dim = self.autoencoder.latent_dim
            if config.get("io_channels", latent_dim) != latent_dim:
                raise ValueError(f"model.io_channels={config['io_channels']} but the autoencoder's latent has "
                                 f"{latent_dim} channels ({autoencoder_ckpt})")
        self.model = build_model(DiT, DIT_PRESETS, config, **derived)
        if compile:
            for block in self.model.blocks:
                block.compile()

    # ---- frozen parts ------------------------------------------------------------------------------------------
    @property
    def autoencoder(self):
        """The frozen autoencoder on this stage's device (`load_autoencoder(autoencoder_ckpt)`, on first use)."""
        if self.frozen.autoencoder is None:
            from lafa.stages.loading import load_autoencoder

            if not self.hparams.autoencoder_ckpt:
                raise ValueError("this needs the autoencoder: set autoencoder_ckpt")
            self.frozen.autoencoder = load_autoencoder(self.hparams.autoencoder_ckpt,
                                                       latent_dim=self.hparams.autoencoder_latent_dim)
        return self.frozen.autoencoder.to(self.device)

    def encode_text(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> frozen text tokens (B, L, text_dim) and keep mask (B, L) on this stage's device."""
        key = (tuple(captions), str(self.device))
        cache = self.frozen.text_cache
        if key not in cache:  # a batch of one repeated caption (the lab's) is encoded once, not every step
            if len(cache) >= TEXT_CACHE_SIZE:
                cache.pop(next(iter(cache)))  # oldest first
            cache[key] = self.frozen.text.to(self.device)(list(captions), self.device)
        return cache[key]

    def _latents(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scaled latent (B, C, N) float32, real-frame keep mask (B, N) or None) from a latent or an audio batch.
        Audio is encoded by the frozen autoencoder in float32 (outside any bf16 autocast), its padding masked."""
        padding = batch.get("keep")
        if "latent" in batch:
            z = batch["latent"].float()
            keep = None if padding is None else padding.bool()[:, : z.shape[-1]]
        else:
            ae = self.autoencoder
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                z = ae.encode(batch["audio"].float(), sample_keep=padding).float()
            keep = frame_keep(padding, ae.downsampling_ratio, z.shape[-1])
        return z / self.hparams.latent_scale, keep

    def _cond(self, batch: dict, b: int, keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The DiT's conditioning for a batch: text, timing and, given one, the real-frame mask keep (B, N)."""
        text, text_mask = self.encode_text(batch["caption"])
        start = torch.as_tensor(batch.get("seconds_start", torch.zeros(b)), dtype=torch.float32, device=self.device)
        total = torch.as_tensor(batch["seconds_total"], dtype=torch.float32, device=self.device)
        cond = dict(text=text, text_mask=text_mask, seconds_start=start, seconds_total=total)
        if keep is not None:
            cond["frame_keep"] = keep.bool().to(self.device)
        return cond

    # ---- training ----------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Lightning's first hook, before any logger or callback writes (a version folder, config.yaml): `setup`'s
        checks run here first, so a refused config leaves nothing behind (`setup` runs them on the processes that
        skip this hook, once per process: the weights hash below is not repeated)."""
        self.setup(str(self.trainer.state.fn.value))

    def setup(self, stage: str) -> None:
        """Before any step: audio crops hold a latent frame (and are long enough for fd_mel where it is scored); latent
        shards were encoded by this stage's autoencoder."""
        if self._trainer is None or not self.hparams.autoencoder_ckpt:
            return
        datamodule = self.trainer.datamodule
        if self._checked == (stage, id(datamodule)):
            return
        check_crop(datamodule, self.autoencoder.downsampling_ratio, "the autoencoder")
        if stage == "test":  # lafa test always scores fd_mel
            check_fd_mel_crop(datamodule, self.autoencoder.sample_rate, "")
        elif stage in ("fit", "validate") and any(getattr(c, "fd_mel_clips", 0) for c in self.trainer.callbacks):
            check_fd_mel_crop(datamodule, self.autoencoder.sample_rate, FD_MEL_OFF)
        encoded_by = latent_shard_weights(datamodule)
        if encoded_by:
            from lafa.fingerprint import weights_digest

            mine = weights_digest(self.autoencoder)
            for split, (url, theirs) in encoded_by.items():
                if theirs != mine:
                    raise LafaUserError(
                        f"data.init_args.{split}_shards: {url} holds latents of an autoencoder with weights "
                        f"{theirs[:16]}, but model.init_args.autoencoder_ckpt ({self.hparams.autoencoder_ckpt}) has "
                        f"weights {mine[:16]}; encode the shards with this autoencoder (`lafa encode --ckpt_path "
                        f"... --overwrite`) or set autoencoder_ckpt to the one that encoded them")
        self._checked = (stage, id(datamodule))  # passed: `setup` after `prepare_data` does not repeat them

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.AdamW(self.model.parameters(), lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay)
        if h.lr_schedule == "constant":
            return opt
        if h.lr_schedule != "inverse":
            raise ValueError(f"unknown lr_schedule {h.lr_schedule!r} (inverse | constant)")
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: inverse_lr_factor(step, h.inv_gamma, h.power, h.warmup)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        z0, keep = self._latents(batch)
        b = z0.shape[0]
        cond = self._cond(batch, b, keep)
        cond["cond_drop"] = drop_mask(b, self.hparams.cfg_dropout, self.device)
        t = sample_t(b, self.hparams.t_sampler, self.device)
        loss = diffusion_loss(
            lambda x, tt: self.model(x, tt, **cond), z0, t, torch.randn_like(z0), self.hparams.objective, keep
        ).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        return loss

    # ---- validation: the loss on a fixed t grid with fixed noise -------------------------------------------------
    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        z0, keep = self._latents(batch)
        b = z0.shape[0]
        cond = self._cond(batch, b, keep)
        gen = torch.Generator().manual_seed(self.hparams.seed + batch_idx)
        losses = []
        for t_val in self.hparams.val_t:
            eps = torch.randn(z0.shape, generator=gen).to(self.device)
            t = torch.full((b,), float(t_val), device=self.device)
            loss = diffusion_loss(lambda x, tt: self.model(x, tt, **cond), z0, t, eps, self.hparams.objective, keep)
            self.log(f"val/loss_t{float(t_val):g}", loss.mean(), batch_size=b, sync_dist=True)
            losses.append(loss.mean())
        self.log("val/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=b, sync_dist=True)

    # ---- sampling ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_latents(
        self,
        captions: Sequence[str],
        seconds_total: Sequence[float],
        frames: int,
        seconds_start: Sequence[float] | None = None,
        frame_keep: torch.Tensor | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Latents (B, C, frames) in the autoencoder's scale for captions and their timing condition.

        frame_keep (B, frames) bool marks each clip's real frames (the DiT's self-attention ignores the rest);
        the initial noise comes from `generator` (CPU), else a CPU generator seeded with `seed` (else the
        stage's), so a seed gives the same latents on every device."""
        b = len(captions)
        gen = generator if generator is not None else torch.Generator().manual_seed(
            self.hparams.seed if seed is None else seed)
        noise = torch.randn(b, self.model.io_channels, frames, generator=gen).to(self.device)
        starts = [0.0] * b if seconds_start is None else list(map(float, seconds_start))
        cond = self._cond({"caption": list(captions), "seconds_total": list(map(float, seconds_total)),
                           "seconds_start": starts}, b, frame_keep)
        fn = guided(self.model, cond, self.hparams.cfg_scale if cfg_scale is None else cfg_scale)
        steps = self.hparams.steps if steps is None else steps
        z = sample(fn, noise, steps, self.hparams.objective, sampler or self.hparams.sampler, progress=progress)
        return z.float() * self.hparams.latent_scale

    @torch.no_grad()
    def decode_latents(
        self,
        z: torch.Tensor,
        frames: Sequence[int],
        decode_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Latents (B, C, N) in the autoencoder's scale -> B clips (io_channels, frames[i] * ratio) float32 on CPU.

        Each clip is decoded from its real frames alone (clips of equal length together), so its padding never
        reaches the decoder; the frozen autoencoder runs in its own precision, outside any autocast. LAFA's
        flow-decoder noise comes from `generator` (CPU)."""
        ae = self.autoencoder
        steps = self.hparams.decode_steps if decode_steps is None else decode_steps
        # the autoencoder's precision; a stand-in autoencoder may have no parameters at all (float32 then)
        dtype = next((p.dtype for p in ae.parameters() if p.is_floating_point()), torch.float32)
        frames = [int(n) for n in frames]
        clips: list[torch.Tensor | None] = [None] * len(frames)
        for n in sorted(set(frames)):
            idx = [i for i, f in enumerate(frames) if f == n]
            with torch.autocast(self.device.type, enabled=False):
                audio = ae.decode(z[idx, :, :n].to(self.device, dtype), steps=steps, generator=generator)
            for i, clip in zip(idx, audio.float().cpu(), strict=True):
                clips[i] = clip
        return clips

    @torch.no_grad()
    def generate_samples(
        self,
        captions: Sequence[str],
        samples: Sequence[int],
        seconds_start: Sequence[float] | float = 0.0,
        decode_steps: int | None = None,
        seed: int | None = None,
        **sample_kwargs,
    ) -> list[torch.Tensor]:
        """Audio clips (io_channels, samples[i]) float32 on CPU, one per caption, each conditioned on its
        seconds_start and seconds_total = ceil(samples / sr) (`lafa.data.geometry`, as in training): DiT sampling
        on the clip's real frames, then the autoencoder's decoder. One CPU generator seeded with `seed` (else the
        stage's) draws the DiT noise, then LAFA's decoder noise."""
        ae = self.autoencoder
        sr, ratio = ae.sample_rate, ae.downsampling_ratio
        samples = [int(n) for n in samples]
        if len(samples) != len(captions) or min(samples, default=1) < 1:
            raise ValueError(f"need one positive length per caption, got {samples} for {len(captions)} captions")
        starts = [float(seconds_start)] * len(captions) if isinstance(seconds_start, (int, float)) else list(
            map(float, seconds_start))
        lengths = torch.tensor([frames_for(n, ratio) for n in samples])  # real latent frames per clip
        frames = max(int(lengths.max()), self.hparams.sample_frames)
        gen = torch.Generator().manual_seed(self.hparams.seed if seed is None else seed)
        z = self.sample_latents(captions, [seconds_total(n, sr) for n in samples], frames, seconds_start=starts,
                                frame_keep=keep_from_lengths(lengths, frames), generator=gen, **sample_kwargs)
        return trim(self.decode_latents(z, lengths.tolist(), decode_steps, gen), samples)

    @torch.no_grad()
    def generate(
        self,
        captions: Sequence[str],
        seconds: Sequence[float] | float,
        seconds_start: Sequence[float] | float = 0.0,
        decode_steps: int | None = None,
        **sample_kwargs,
    ) -> list[torch.Tensor]:
        """Audio clips (io_channels, round(seconds * sample_rate)) float32 on CPU, one per caption
        (`generate_samples` with the lengths in seconds)."""
        seconds = [float(seconds)] * len(captions) if isinstance(seconds, (int, float)) else list(map(float, seconds))
        sr = self.autoencoder.sample_rate
        return self.generate_samples(captions, [seconds_to_samples(s, sr) for s in seconds], seconds_start,
                                     decode_steps, **sample_kwargs)

    # ---- test: generate for the test captions and score them against the test clips (Table 1) ---------------
    def _test_dir(self) -> Path:
        """test_eval.out_dir, else <log dir>/test."""
        out_dir = (self.hparams.test_eval or {}).get("out_dir")
        return Path(out_dir) if out_dir else Path(self.trainer.log_dir or ".") / "test"

    def on_test_epoch_start(self) -> None:
        self._test_prompts: dict[str, str] = {}

    @torch.no_grad()
    def test_step(self, batch: dict, batch_idx: int) -> None:
        """Generate a clip per test caption, exactly as long as its crop's real audio and at its seconds_start
        (seed `seed + batch_idx`), and write it beside the real crop: <out>/generated/<id>.wav,
        <out>/reference/<id>.wav (latent batches: the autoencoder's reconstruction of the real frames)."""
        ae = self.autoencoder
        out = self._test_dir()
        samples = real_samples(batch, ae.downsampling_ratio).tolist()
        check_fd_mel_clips(batch["id"], samples, ae.sample_rate, "test", "")
        clips = self.generate_samples(batch["caption"], samples, batch.get("seconds_start", 0.0),
                                      seed=self.hparams.seed + batch_idx)
        if "audio" in batch:
            refs = trim(batch["audio"].float().cpu(), samples)
        else:
            z, _ = self._latents(batch)
            gen = torch.Generator().manual_seed(self.hparams.seed + batch_idx)
            frames = [frames_for(n, ae.downsampling_ratio) for n in samples]
            refs = trim(self.decode_latents(z * self.hparams.latent_scale, frames, generator=gen), samples)
        for clip_id, caption, clip, ref in zip(batch["id"], batch["caption"], clips, refs, strict=True):
            save_audio(out / "generated" / f"{clip_id}.wav", clip, ae.sample_rate)
            save_audio(out / "reference" / f"{clip_id}.wav", ref, ae.sample_rate)
            self._test_prompts[str(clip_id)] = caption

    def on_test_epoch_end(self) -> None:
        """Merge every rank's prompts, score the folders (`lafa.metrics.generation.evaluate_folders` with the
        `test_eval` settings), print the Table-1 row and write <out>/metrics.json."""
        from lafa.metrics.generation import evaluate_folders, table_row

        out = self._test_dir()
        out.mkdir(parents=True, exist_ok=True)
        (out / f"prompts.rank{self.global_rank}.json").write_text(json.dumps(self._test_prompts, indent=2))
        self.trainer.strategy.barrier()
        if not self.trainer.is_global_zero:
            return
        prompts = {}
        for part in sorted(out.glob("prompts.rank*.json")):
            prompts.update(json.loads(part.read_text()))
            part.unlink()
        (out / "prompts.json").write_text(json.dumps(prompts, indent=2))
        settings = {k: v for k, v in (self.hparams.test_eval or {}).items() if k != "out_dir"}
        result = evaluate_folders(out / "generated", out / "reference", prompts=prompts, **settings)
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
        print(table_row(result))
        print(f"generated audio, references and metrics.json in {out}")
