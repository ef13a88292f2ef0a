"""The ``lightclip`` command line: info, demo, train, eval, export, teacher-embeddings.

Each sub-command lives in its own module and registers itself here; errors a user can fix
are printed as one line and a non-zero exit, never a traceback wall.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import run_command


def _info(_: argparse.Namespace) -> int:
    import torch

    import lightclip

    from .machine import describe_machine, machine_label

    print(f"lightclip {lightclip.__version__}")
    print(f"torch {torch.__version__} (cuda available: {torch.cuda.is_available()})")
    print(f"torch threads: {torch.get_num_threads()}")
    # The same seed trains into other weights on other kernels: quote this with a result.
    print(f"machine: {machine_label(describe_machine())}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        logs=args.logs,
        progress=not args.no_progress,
    )
    return 0


def _add_train_command(sub: Any) -> None:
    from .config import add_arguments, config_from_args

    def run(args: argparse.Namespace) -> int:
        from .train import train

        result = train(config_from_args(args))
        return 130 if result.interrupted else 0

    train_parser = sub.add_parser(
        "train", help="train a model (open_clip-style flags; --recipe clip for the baseline)"
    )
    add_arguments(train_parser)
    train_parser.set_defaults(run=run)


def _add_eval_command(sub: Any) -> None:
    from .eval_cli import add_eval_arguments, add_export_arguments, run_eval, run_export

    evaluate = sub.add_parser(
        "eval", help="zero-shot classification / retrieval, CLIP_benchmark-shaped JSON"
    )
    add_eval_arguments(evaluate)
    evaluate.set_defaults(run=run_eval)
    export = sub.add_parser("export", help="write a checkpoint as an open_clip model folder")
    add_export_arguments(export)
    export.set_defaults(run=run_export)


def _add_teacher_embeddings_command(sub: Any) -> None:
    from .teacher_embeddings import add_arguments, run

    parser = sub.add_parser(
        "teacher-embeddings",
        help="run a distillation teacher once over shards and store its embeddings beside them",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    from .demo import DEMO_STEPS

    parser = argparse.ArgumentParser(prog="lightclip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and devices").set_defaults(run=_info)
    demo = sub.add_parser("demo", help="the main job on the bundled data")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--steps", type=int, default=None, help=f"training steps (default {DEMO_STEPS})"
    )
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--logs", default="./logs", help="where the demo run folder goes")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(run=_demo)
    _add_train_command(sub)
    _add_eval_command(sub)
    _add_teacher_embeddings_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("lightclip", lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
