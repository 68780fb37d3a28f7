"""The always-on guard of every `lafa fit`: training stops at the first NaN or infinity, and nothing poisoned is
ever written (docs/faults.md: its switches, the faults it catches and their tests).

`lafa.cli` adds `FiniteGuard` to every Trainer (`ALWAYS_ON_CALLBACKS`, config section `finite_guard`).
Lightning calls `on_before_backward` from `manual_backward` too and `on_before_optimizer_step` from every
`optimizer.step()`, so it works the same for automatic (LAFA, DiT) and manual optimisation (the VAE). A
stage whose loss has named parts puts them in `self.loss_terms` (name -> scalar tensor) before it
backpropagates, and the error names the non-finite ones.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lafa.checkpoints import nonfinite_tensors
from lafa.errors import LafaUserError, listing


class NonFiniteTrainingError(LafaUserError):
    """Training met a NaN or infinity (loss, gradients or weights) and stopped before anything was saved."""


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach()).all())


def _grad_names(optimizer, names: dict[int, str]) -> list[str]:
    """Names of the parameters of `optimizer` whose gradient holds a NaN or an infinity."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None and p.numel()]
    if not params:
        return []
    peaks = torch._foreach_norm([p.grad.detach() for p in params], float("inf"))  # max |g|: NaN/inf iff any
    if bool(torch.stack([x.float().to(peaks[0].device) for x in peaks]).isfinite().all()):
        return []
    return [names.get(id(p), f"<parameter {tuple(p.shape)}>") for p, x in zip(params, peaks, strict=True)
            if not torch.isfinite(x)]


class FiniteGuard(Callback):
    def __init__(self, check_loss: bool = True, check_gradients: bool = True, check_checkpoints: bool = True) -> None:
        """check_loss: stop when the loss is NaN/inf; check_gradients: stop when a gradient is; check_checkpoints:
        refuse to save, or to resume from, a checkpoint whose weights are."""
        super().__init__()
        self.check_loss, self.check_gradients, self.check_checkpoints = check_loss, check_gradients, check_checkpoints
        self._names: dict[int, str] = {}
        self._batch_idx = 0
        self._bad_loss: str | None = None

    # ---- where we are, what went wrong ---------------------------------------------------------------------
    def _error(self, trainer: Trainer, problem: str) -> NonFiniteTrainingError:
        where = f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx})"
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", "")
        then = f"resume from the last checkpoint written, {ckpt}, or train again" if ckpt else "train again"
        return NonFiniteTrainingError(
            f"training stopped at {where}: {problem}. This step was not applied and nothing was saved from it. "
            f"Lower the learning rate or clip gradients (gradient_clip_val), then {then}; "
            f"finite_guard.check_loss/check_gradients/check_checkpoints false turn these checks off")

    def _describe_loss(self, pl_module: LightningModule, loss: torch.Tensor) -> str:
        text = f"the loss is {float(loss.detach().float().sum()):g}"
        terms = getattr(pl_module, "loss_terms", None)
        if isinstance(terms, dict) and terms:
            bad = [f"{k} = {float(v.detach().float().sum()):g}" for k, v in terms.items()
                   if isinstance(v, torch.Tensor) and not _finite(v)]
            named = f"non-finite loss terms: {', '.join(bad)}" if bad else f"its terms ({', '.join(terms)}) are finite"
            return f"{text} ({named})"
        return f"{text} (the loss training_step returned)"

    # ---- hooks ---------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._names = {id(p): n for n, p in pl_module.named_parameters()}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if not self.check_loss or _finite(loss):
            return
        self._bad_loss = self._describe_loss(pl_module, loss)
        if trainer.world_size == 1:  # under DDP the ranks decide together, before the optimiser step
            raise self._error(trainer, self._bad_loss)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        problems = [self._bad_loss] if self._bad_loss else []
        self._bad_loss = None
        if self.check_gradients and getattr(trainer.precision_plugin, "scaler", None) is None:
            bad = _grad_names(optimizer, self._names)
            if bad:
                problems.append(f"the gradients of {len(bad)} parameters are not finite: {listing(bad)}")
        stop = bool(problems)
        if trainer.world_size > 1:
            stop = not trainer.strategy.reduce_boolean_decision(not stop, all=True)
        if stop:
            raise self._error(trainer, "; ".join(problems) or "another rank's loss or gradients are not finite")

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        bad = self._bad_weights(checkpoint)
        if bad:
            raise self._error(trainer, f"refusing to save a checkpoint whose weights hold NaN or inf ({bad})")

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        bad = self._bad_weights(checkpoint)
        if bad:
            raise NonFiniteTrainingError(
                f"{trainer.ckpt_path or 'the checkpoint'}: refusing to resume from weights that hold NaN or inf "
                f"({bad}); resume from an earlier checkpoint")

    def _bad_weights(self, checkpoint: dict) -> str:
        state = checkpoint.get("state_dict") or {}
        bad = nonfinite_tensors(state) if self.check_checkpoints else []
        if not bad:
            return ""
        total = sum(isinstance(v, torch.Tensor) and v.is_floating_point() for v in state.values())
        return f"{len(bad)} of {total} tensors: {listing(bad)}"
