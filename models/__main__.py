"""``python -m models list``, ``python -m models build NAME [--out DIR] [--force]`` and
``python -m models corpus [NAME] [--out DIR] [--force]`` (list the corpus of third-party architectures, or
export one; exporting needs ``pip install -e '.[corpus]'``).

Exit codes as in docs/architecture.md: 0 done, 2 bad input or usage (one sentence on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import sys

from dispatch.errors import DispatchError
from models.corpus import CORPUS, get_corpus_entry
from models.corpus_export import build_corpus
from models.zoo import build, get_entry, list_models, param_count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description="The dispatch model zoo.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the zoo models with their parameter counts")
    b = sub.add_parser("build", help="export a zoo model to ONNX (cached) and print its path")
    b.add_argument("name", help="zoo model name (see 'list')")
    b.add_argument("--out", metavar="DIR",
                   help="output folder (default $DISPATCH_CACHE or ~/.cache/dispatch/models)")
    b.add_argument("--force", action="store_true", help="rebuild even if a current cached file exists")
    c = sub.add_parser("corpus", help="list the corpus of third-party architectures, or export one")
    c.add_argument("name", nargs="?", help="corpus model to export to ONNX (cached) and print the path of")
    c.add_argument("--out", metavar="DIR",
                   help="folder (default $DISPATCH_CACHE or ~/.cache/dispatch/models); files go in corpus/")
    c.add_argument("--force", action="store_true", help="rebuild even if a current cached file exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            names = list_models()
            width = max(len(name) for name in names)
            print(f"{'name':<{width}}  {'params':>12}  description")
            for name in names:
                print(f"{name:<{width}}  {param_count(name):>12,}  {get_entry(name).description}")
        elif args.command == "corpus" and args.name is None:
            width = max(len(name) for name in CORPUS)
            print(f"{'name':<{width}}  {'library':<12}  description")
            for name, e in CORPUS.items():
                print(f"{name:<{width}}  {e.library:<12}  {e.description}")
        elif args.command == "corpus":
            get_corpus_entry(args.name)  # fail fast with the list of valid names
            print(build_corpus(args.name, out_dir=args.out, force=args.force))
        else:
            get_entry(args.name)  # fail fast with the list of valid names
            print(build(args.name, out_dir=args.out, force=args.force))
    except DispatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
