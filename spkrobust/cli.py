"""Command line: ``python -m spkrobust <stage> ...`` / ``spkrobust <stage> ...``.

Each stage lives in the module that owns its concept and exposes ``CLI = {stage: (configure, run)}``
where ``configure(parser)`` adds arguments and ``run(args)`` does the work. Modules are imported
lazily so ``--help`` and Snakemake's parsing stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from spkrobust.errors import UserError

# stage -> module that implements it
STAGES: dict[str, str] = {
    "prepare": "spkrobust.data.datasets",
    "train-ann": "spkrobust.training.train",
    "convert": "spkrobust.training.convert",
    "train-snn": "spkrobust.training.train",
    "clean": "spkrobust.evaluation.evaluate",
    "grad": "spkrobust.attacks.stage",
    "craft": "spkrobust.attacks.stage",
    "evaluate": "spkrobust.evaluation.evaluate",
    "aggregate": "spkrobust.report.aggregate",
    "report": "spkrobust.report.render",
    "agree": "spkrobust.report.agree",
    "bench": "spkrobust.tools.bench",
    "validate": "spkrobust.config.validate",
    "plan": "spkrobust.tools.plan",
    "selfcheck": "spkrobust.tools.selfcheck",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="spkrobust", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    sub.required = True
    stage = next((a for a in argv if not a.startswith("-")), None)
    handlers = {}
    for name, modname in STAGES.items():
        if stage is not None and name != stage:
            sub.add_parser(name)  # listed in --help, arguments parsed only for the chosen stage
            continue
        mod = importlib.import_module(modname)
        configure, run = mod.CLI[name]
        p = sub.add_parser(name, help=(run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else None)
        configure(p)
        handlers[name] = run
    args = parser.parse_args(argv)
    try:
        result = handlers[args.stage](args)
    except UserError as e:
        print(f"spkrobust {args.stage}: error: {e}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
