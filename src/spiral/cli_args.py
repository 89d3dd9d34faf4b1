"""Argument types every ``spiral`` subcommand shares, so a bad number is caught at the door.

Each type turns a command-line string into a value or raises ``argparse.ArgumentTypeError``
with the accepted range; argparse then prints one line (``spiral train: error: argument
--batch-size: must be a whole number >= 1, got 0``) and exits with status 2.

``--data`` means one thing everywhere a corpus is read: a registered corpus name
(``names``, ``shakespeare``) or the path of a UTF-8 text file. ``--data-dir`` is the folder
that holds local copies of the registered corpora (the same as ``SPIRAL_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

# Anything larger is a typo, not a plan: 10^9 optimizer steps would take decades here.
_MAX_INT = 10**9


def _int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {value}")
    if value > _MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_INT:,}, got {value:,}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (steps, batch sizes, lengths, counts)."""
    return _int(text, 1)


def nonneg_int(text: str) -> int:
    """A whole number >= 0 (warm-up steps, intervals where 0 means off, seeds)."""
    return _int(text, 0)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (weight decay, clipping norm where 0 means off, temperature)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {value}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1) (dropout)."""
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def unit_interval(text: str) -> float:
    """A number in (0, 1] (top-p, ratios)."""
    value = _float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def corpus(text: str) -> str:
    """A registered corpus name or the path of an existing, readable text file."""
    from spiral.data import ALIASES, REGISTRY

    if ALIASES.get(text, text) in REGISTRY:
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} is a folder; --data takes a corpus name ({', '.join(sorted(REGISTRY))}) "
            "or a text file (use --data-dir for a folder of corpora)")
    if not path.is_file():
        raise argparse.ArgumentTypeError(
            f"no such corpus or file: {text} (corpora: {', '.join(sorted(REGISTRY))}; "
            "or give the path of a UTF-8 text file)")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text} is not readable (check its permissions)")
    return str(path)


def data_dir(text: str) -> str:
    """An existing folder holding local copies of the corpora."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder (give the folder that holds "
                                         "tinyshakespeare.txt and names.txt)")
    return str(path.resolve())


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """``--data-dir DIR``: where the registered corpora are read from (as SPIRAL_DATA_DIR)."""
    parser.add_argument("--data-dir", type=data_dir, metavar="DIR",
                        help="folder with local copies of the corpora (overrides "
                             "SPIRAL_DATA_DIR)")


def apply_data_dir(args: argparse.Namespace) -> None:
    if getattr(args, "data_dir", None):
        os.environ["SPIRAL_DATA_DIR"] = args.data_dir


def type_for_default(default: object) -> Callable[[str], object]:
    """The argument type that fits a config field's default value."""
    if isinstance(default, bool):
        raise TypeError("booleans are flags, not typed arguments")
    if isinstance(default, int):
        return nonneg_int
    if isinstance(default, float):
        return nonneg_float
    return str
