"""Evaluation metrics: reconstruction (auraloss defaults, Sec. 5.3) and generation (FD_openl3, KL_PaSST, CLAP)."""
