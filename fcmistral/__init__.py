"""fcmistral: teach a Mistral-style causal LM to call functions in the glaive chat format.

The package holds the shared logic; the top-level scripts (train.py, inference.py, ...) are thin
command-line front ends over it.
"""

import logging as _logging

# bitsandbytes warns at import, on every AVX512-BF16 CPU, that an optional hub kernel package is
# missing; it falls back to its own kernels, so the line is noise (and lands in --help output).
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
