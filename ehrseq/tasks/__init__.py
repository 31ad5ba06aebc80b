"""Tasks as data: label files, ACES task files, built-in targets (see :mod:`ehrseq.tasks.spec`)."""
