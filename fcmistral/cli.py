"""The command-line runner every script's ``main`` goes through.

Bad input (a missing folder, a file without the right columns, an impossible setting) must end
in one clear line and a non-zero exit, not in a traceback from deep inside a library. It also
sets up logging and quiets library noise that users cannot act on, here and not at import time,
so that no script depends on the order of its imports; a script imports what would make noise
(transformers' Trainer pieces load bitsandbytes) inside its ``main``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Callable

from fcmistral.errors import UserError


def quiet_library_noise() -> None:
    """Silence warnings that say nothing a user can act on."""
    # bitsandbytes warns at import, on every AVX512-BF16 CPU, that an optional hub kernel package
    # is missing; it falls back to its own kernels, so the line is noise (and lands in --help output).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # PEFT 0.21 calls an API that transformers 5 deprecated.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)


def run_cli(main: Callable[[], None]) -> None:
    """Run ``main``; a UserError prints ``error: ...`` and exits 2, Ctrl-C exits 130."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    quiet_library_noise()
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
