"""overfitlab's benchmark suite: ``python -m benchmarks`` (see benchmarks/README.md).

- ``mnist_recipe``   (a) the tutorial's recipe on MNIST, 1 epoch, 1 and 2 threads
- ``gap_preset``     (b) the GAP preset, where data handling dominates
- ``remedies_study`` (c) the remedies study, serial and local, against the tutorial's loop per run
- ``peak_memory``    (d) peak memory of a full MNIST run

``tutorial_loop`` is the tutorial's training loop as the tutorial writes it (the
baseline); ``contenders`` holds every measured run, each executed in a fresh
process by ``worker``; ``harness`` alternates them and computes medians and ratios.
"""
