"""The `mixopt` command line (also `python -m mixopt`): one module per group of commands.

    study.py       recommend, and its stages: sample, run, fit, propose
    data.py        data prepare
    outputs.py     export, report
    large_run.py   train, jacobian, validate
    common.py      the apps, the progress reporter, shared options, the one error path

Every expected failure (bad config, missing file, bad argument, corrupted data) ends with exit
status 2 and exactly one line on stderr that starts with `error:`; no traceback.
"""

from __future__ import annotations

import sys

# isort: off
# each module registers its commands on import, and `mixopt --help` lists them in this order
from mixopt.cli import study, outputs, large_run, data  # noqa: F401
# isort: on
from mixopt.cli.common import ConsoleReporter, app, run

__all__ = ["app", "main", "entry", "ConsoleReporter"]


def main(argv: list[str] | None = None, runner=None) -> int:
    """Entry point: run the app, turning expected errors into one `error:` line and exit status 2.

    runner: what trains the proxies of `recommend` and `run` instead of Ray (tests, simulation
    studies): any object with `run(mixtures, seeds, on_result)`."""
    return run(argv, runner)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
