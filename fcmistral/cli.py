"""What every command-line front end shares: a user-facing error type and its handling.

Bad input (a missing folder, a file without the right columns, an impossible setting) must end
in one clear line and a non-zero exit, not in a traceback from deep inside a library.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Callable


class UserError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


def run_cli(main: Callable[[], None]) -> None:
    """Run ``main``; a UserError prints ``error: ...`` and exits 2, Ctrl-C exits 130."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # PEFT 0.21 calls an API that transformers 5 deprecated; users cannot act on the warning.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
