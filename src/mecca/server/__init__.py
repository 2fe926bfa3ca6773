"""``mecca serve``: the HTTP API, the MONAI Label subset for 3D Slicer, and (later) the page.

:mod:`~mecca.server.settings` (safe defaults), :mod:`~mecca.server.sessions` (isolated,
locked, autosaved sessions), :mod:`~mecca.server.uploads` (limits checked from headers,
safe unpacking), :mod:`~mecca.server.security` (body limit, token, error replies),
:mod:`~mecca.server.app` (the JSON API) and :mod:`~mecca.server.monailabel`.
FastAPI and uvicorn come with the ``server`` extra: ``pip install 'mecca[server]'``.
"""
