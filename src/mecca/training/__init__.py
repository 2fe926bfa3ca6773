"""What every training run shares: the run folder, the loop, checkpoints and the log
(:mod:`mecca.training.run`). Each method family's trainer adds only its own step and
validation (``mecca.methods.<family>.train``)."""
