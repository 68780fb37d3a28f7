"""Learning-rate schedules of the stages (as LambdaLR factors of the step)."""


def inverse_lr_factor(step: int, inv_gamma: float, power: float, warmup: float) -> float:
    """stable-audio-tools' InverseLR (the SAO VAE's and DiT's schedule): (1 - warmup^(step+1)) (1 + step / inv_gamma)^-power."""
    return (1.0 - warmup ** (step + 1)) * (1.0 + step / inv_gamma) ** -power
