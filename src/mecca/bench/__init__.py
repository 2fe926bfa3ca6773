"""``mecca benchmark`` and what compares methods and runs: the protocols and settings
(:mod:`~mecca.bench.protocols`), the runner (:mod:`~mecca.bench.runner`, its docstring
describes the protocols and outputs), results and reports (:mod:`~mecca.bench.report`),
paired statistics (:mod:`~mecca.bench.stats`), plots and overlays
(:mod:`~mecca.bench.plots`, :mod:`~mecca.bench.overlay`), training runs' validation curves
(:mod:`~mecca.bench.curves`, ``mecca curves``) and file-level scoring
(:mod:`~mecca.bench.evaluate`, ``mecca evaluate``).

The package imports nothing itself, so that ``mecca compare``, ``mecca curves`` and
``mecca evaluate`` load their own module only, not the methods the runner needs.
"""
