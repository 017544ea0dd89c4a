"""The training engine: ``loop.fit`` (the loop every method shares),
``run`` (a whole training run as the scripts do it), ``checkpoint`` (safe
loading, atomic saving, resume files), ``rng`` (seeds and generator states),
``precision`` (mixed precision, channels-last, compile, DDP), ``distributed``
(torchrun), ``logs`` (stdout and the official log file)."""
