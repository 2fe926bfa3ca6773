"""User interactions: click types, simulated users and the hint maps a network sees.

``clicks`` defines the interaction kinds, the recordable :class:`~mecca.interaction.clicks.Click`
and the geometry of errors and surfaces; ``users`` the simulated users of the benchmark
protocols (MECCA edge points, IteR-MRL error centres, the CVPR 2025 challenge distance user,
random, no interaction and scribbles, whose strokes ``scribbles`` draws). ``hints`` turns
clicks into Gaussian, Euclidean or geodesic hint maps on the network grid; ``guide`` makes
MECCA's advice regions.
"""
