"""The napari plugin (``pip install 'mecca[napari]'``, docs/napari.md): a dock widget
that runs a MECCA session on an image layer, from clicks placed in a points layer.

napari and Qt are imported by :mod:`mecca.napari_plugin.widget` only; no other part of
``mecca`` imports this package (import-linter contract in pyproject.toml). The manifest
napari reads is ``napari.yaml`` beside this file.
"""
