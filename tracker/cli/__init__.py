"""The ``wattprint`` command: ``main`` assembles the parser, and each subcommand has a module.

A subcommand module (``devices``, ``run``, ``locations``, ``estimate``, ``report``, ``merge``,
``compare``, ``watch``) has ``register(subparsers)``, which adds its parser with ``handle`` as the
handler, and ``handle(args)``, which calls the library, prints, and returns the exit status. Bad
input raises ``ValueError`` (or ``FileNotFoundError``), which ``main`` prints as one line with exit
status 2.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``ArgumentParser.add_subparsers`` returns: each module's ``register`` adds to it."""
