"""Commands ``vasink demo`` and ``vasink organism train``."""

from __future__ import annotations

from .flags import non_negative_int, positive_float, positive_int


# command -> its one-line help (vasink --help lists these without building the parsers)
COMMANDS = {
    "demo": "run the shipped organism on a few scenes, VAR off and on",
    "organism": "the shipped small model",
}


def add_commands(commands) -> None:
    demo = commands.add_parser("demo", help=COMMANDS["demo"])
    demo.add_argument("--out", default="vasink-demo", help="folder for the figures (default: vasink-demo)")
    demo.add_argument("--scenes", type=positive_int, default=4, help="number of test scenes (default: 4)")
    demo.add_argument("--seed", type=non_negative_int, default=0, help="scene seed (default: 0)")
    demo.set_defaults(func=run_demo_command)

    organism = commands.add_parser("organism", help=COMMANDS["organism"])
    organism_commands = organism.add_subparsers(dest="organism_command", required=True)
    train = organism_commands.add_parser("train", help="reproduce the shipped checkpoint from a seed")
    train.add_argument("--out", required=True, help="output folder for the checkpoint and training log")
    train.add_argument("--seed", type=non_negative_int, default=0)
    train.add_argument("--minutes", type=positive_float, default=None, help="stop after this many minutes (run again to resume)")
    train.add_argument("--fresh", action="store_true", help="start over instead of resuming from --out's checkpoint")
    train.add_argument("--device", default="cpu", help="cpu (default, reproduces the shipped run) or cuda")
    train.set_defaults(func=run_train_command)


def run_demo_command(args) -> int:
    from ..demo import run_demo

    run_demo(args.out, num_scenes=args.scenes, seed=args.seed)
    return 0


def run_train_command(args) -> int:
    from ..organism.train import train

    train(args.out, seed=args.seed, minutes=args.minutes, resume=not args.fresh, device=args.device)
    return 0
