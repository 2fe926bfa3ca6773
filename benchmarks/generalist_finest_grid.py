"""Measured on val, not adopted: a box prompt's very large ROI on a grid two network factors finer.

Runs the val users of ``benchmarks/generalist_settings.py`` with the shipped bundle and its
defaults, except that a box prompt's ROI at least RATIO times the base grid along some axis
runs on 80 x 80 x 64 (the network never trained on that grid) instead of 64 x 64 x 48
(docs/defaults.md, "A box's large ROI runs on the finer grid"). Usage::

    python benchmarks/generalist_finest_grid.py RATIO finest [--out results.json]
"""

import sys

import generalist_settings as gs  # the script beside this one

from mecca.methods.generalist import method as generalist

FINEST_FROM = float(sys.argv.pop(1))


def patch(m: generalist.GeneralistMethod) -> None:
    """Give ``m`` the 80 x 80 x 64 grid for a box prompt's ROI of at least FINEST_FROM."""
    base = type(m).grid_for.__get__(m)

    def grid_for(roi_shape, *, boxed=False):  # type: ignore[no-untyped-def]
        g = base(roi_shape, boxed=boxed)
        ratio = max(int(n) / b for n, b in zip(roi_shape, m.grid, strict=True))
        if (boxed or m.roi_as_box) and ratio >= FINEST_FROM:
            f = m.net.config.factor
            return (m.grid[0] + 2 * f, m.grid[1] + 2 * f, m.grid[2] + 2 * f)
        return g

    m.grid_for = grid_for  # type: ignore[method-assign]
    m._check_grid = lambda grid: None  # type: ignore[method-assign]


orig = generalist.generalist_factory


def factory(*a, **k):  # type: ignore[no-untyped-def]
    m = orig(*a, **k)
    patch(m)
    return m


generalist.generalist_factory = factory  # type: ignore[assignment]
gs.VARIANTS["finest"] = {f"box 80x80x64 from {FINEST_FROM}": {}}
gs.main()
