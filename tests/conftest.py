"""Suite-wide guard: nothing is downloaded in a test. huggingface_hub (and transformers through it) read
HF_HUB_OFFLINE when first imported, so it is set here, before any test module imports them; subprocesses the
tests start inherit it. A repo id that is not in the cache then ends in lafa's one-line error, never a request."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
