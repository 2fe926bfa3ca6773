"""Reinforcement learning for voxel agents (IteR-MRL, MECCA).

Every voxel is an agent that nudges its foreground probability by one of a few discrete
actions per step. ``actions`` defines the action sets, ``rewards`` the per-voxel rewards
(IteR-MRL Eq. 3, MECCA Eqs. 8, 12-14), ``a2c`` the synchronous advantage actor-critic
losses over a batched episode, ``env`` the batched environment with a simulated user and
hint maps, and ``semisup`` MECCA's simulated labels for unlabeled volumes (Sec. 3.6).
"""
