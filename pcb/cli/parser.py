"""`python -m pcb`'s parser, generated from the stage and option tables (options.py)."""

from __future__ import annotations

import argparse

from .commands import COMMANDS
from .options import STAGES, stage_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcb", description="PCB re-ID: export, preprocess, infer, evaluate, perf, report."
    )
    # Its own dest: a sub-parser's default would overwrite a shared one (argparse).
    parser.add_argument(
        "--force",
        dest="force_all",
        action="store_true",
        help="before the stage name: run the stage even when manifest.json shows it current",
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES:
        sub = stages.add_parser(stage.name, help=stage.help, description=stage.help)
        for option in stage_options(stage.name):
            sub.add_argument(option.flag, **option.argparse_kwargs(stage.name))
        sub.set_defaults(func=COMMANDS[stage.name])
    return parser
