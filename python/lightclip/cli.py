"""The ``lightclip`` command line: ``lightclip info``, ``lightclip demo``.

Each sub-command lives in its own module and registers itself here; errors a user can fix
are printed as one line and a non-zero exit, never a traceback wall.
"""

from __future__ import annotations

import argparse
import sys

from .errors import LightclipError


def _info(_: argparse.Namespace) -> int:
    import torch

    import lightclip

    print(f"lightclip {lightclip.__version__}")
    print(f"torch {torch.__version__} (cuda available: {torch.cuda.is_available()})")
    print(f"torch threads: {torch.get_num_threads()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightclip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and devices").set_defaults(run=_info)
    demo = sub.add_parser("demo", help="the main job on the bundled data")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except LightclipError as e:
        print(f"lightclip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lightclip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
