"""``spiral tokenize train|encode|decode``: train a byte-level BPE and use it from the shell.

Examples::

    spiral tokenize train --input shakespeare --vocab-size 4096 --out bpe.json
    echo "To be, or not to be" | spiral tokenize encode --model bpe.json
    spiral tokenize decode --model bpe.json 1026 11 393 407 284 307

Chapter: stage 10, "Tokenization" (section *The code*).
"""

from __future__ import annotations

import argparse
import sys
import time

from spiral.cli_args import add_data_dir, corpus, positive_int
from spiral.tokenizers.bpe import BPETokenizer
from spiral.tokenizers.pretokenize import GPT2_PATTERN, GPT4_PATTERN

PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}


def vocab_size(text: str) -> int:
    """At least the 256 byte tokens."""
    value = positive_int(text)
    if value < 256:
        raise argparse.ArgumentTypeError(f"must be >= 256 (the byte tokens), got {value}")
    return value


def _read_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return str(args.text)
    return sys.stdin.read()


def cmd_train(args: argparse.Namespace) -> int:
    """Train on a registered corpus name or a UTF-8 file and save the merges as JSON."""
    from spiral import data
    from spiral.cli_args import apply_data_dir

    apply_data_dir(args)
    text = data.load_text(args.data)
    tok = BPETokenizer(pattern=PATTERNS[args.pattern], special_tokens=args.special or [])
    t0 = time.perf_counter()
    tok.train(text, args.vocab_size, trainer=args.trainer)
    seconds = time.perf_counter() - t0
    tok.save(args.out)
    n_bytes = len(text.encode("utf-8"))
    n_tokens = len(tok.encode(text, allowed_special="all"))
    print(
        f"trained {len(tok.merges)} merges (vocab_size {tok.vocab_size}) in {seconds:.2f} s; "
        f"{n_bytes / n_tokens:.3f} bytes/token on the training text; saved {args.out}"
    )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    """Print the token ids of the text (``--text`` or stdin), space-separated."""
    tok = BPETokenizer.load(args.model)
    text = _read_text(args)  # the user's own text: special-token text is meant as control
    ids = tok.encode_ordinary(text) if args.no_special else tok.encode(text, allowed_special="all")
    if args.show:
        print(" | ".join(repr(tok.decode([i])) for i in ids))
    else:
        print(" ".join(map(str, ids)))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    """Print the text of the ids (arguments or whitespace-separated on stdin)."""
    tok = BPETokenizer.load(args.model)
    raw = args.ids if args.ids else sys.stdin.read().split()
    try:
        ids = [int(x) for x in raw]
    except ValueError:
        raise ValueError("token ids must be integers") from None
    sys.stdout.write(tok.decode(ids))
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    return 0


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``tokenize`` with its ``train``, ``encode`` and ``decode`` subcommands."""
    p = subparsers.add_parser(
        "tokenize", help="train, encode and decode with byte-level BPE",
        description="Byte-level BPE from the command line: train merges on a corpus, "
        "encode text to ids, decode ids to text.",
    )
    sub = p.add_subparsers(dest="tokenize_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", help="learn merges from a corpus and save them as JSON")
    t.add_argument("--data", "--input", dest="data", type=corpus, default="shakespeare",
                   help="corpus: names | shakespeare | PATH of a UTF-8 text file "
                        "(default shakespeare; --input is an older spelling)")
    add_data_dir(t)
    t.add_argument("--vocab-size", type=vocab_size, default=4096,
                   help="256 bytes + merges + special tokens (default 4096)")
    t.add_argument("--out", required=True, help="path of the JSON file to write")
    t.add_argument("--special", action="append", metavar="TOKEN",
                   help="a special token such as '<|endoftext|>' (repeatable)")
    t.add_argument("--pattern", choices=sorted(PATTERNS), default="gpt2",
                   help="pre-tokenizer regex (default gpt2)")
    t.add_argument("--trainer", choices=["fast", "naive"], default="fast",
                   help="incremental trainer (default) or the naive reference")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("encode", help="text (--text or stdin) -> token ids")
    e.add_argument("--model", required=True, help="JSON file written by 'tokenize train'")
    e.add_argument("--text", help="text to encode (default: read stdin)")
    e.add_argument("--no-special", action="store_true",
                   help="encode special-token text as ordinary bytes")
    e.add_argument("--show", action="store_true", help="print the tokens' text, not ids")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="token ids (arguments or stdin) -> text")
    d.add_argument("--model", required=True, help="JSON file written by 'tokenize train'")
    d.add_argument("ids", nargs="*", help="token ids (default: read stdin)")
    d.set_defaults(func=cmd_decode)
