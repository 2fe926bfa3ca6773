"""The ``mecca`` command line: thin wrappers over library functions, imports kept lazy."""

from __future__ import annotations

import click

from mecca import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mecca")
def main() -> None:
    """MECCA: interactive 3D medical image segmentation.

    Example: mecca demo
    """
