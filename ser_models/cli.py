"""The argument parser of every emosweep command: its errors end, like all of emosweep's, with the fix."""
from __future__ import annotations

import argparse
import sys


class Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {self.prog}: {message}. Fix: `{self.prog} --help` lists the arguments\n")
