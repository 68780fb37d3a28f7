"""Diffusion objectives (v with the cosine schedule, rectified flow), classifier-free guidance and samplers:
pure functions of tensors and a model callable, no Lightning."""
