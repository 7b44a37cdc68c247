"""Experiments: the seeds x tasks x agents x settings runner, the paper's figures, and sweeps.

- :mod:`experiments.grid`    agents, settings and presets; expands a grid into runs
- :mod:`experiments.results` where a run's files live, and the loader of all results as one tidy DataFrame
- :mod:`experiments.runner`  CLI: runs a grid locally (one process per core) or on a Ray cluster
- :mod:`experiments.plot`    CLI: the paper's learning-curve figures, mean and 95% bootstrap band over seeds
- :mod:`experiments.sweep`   CLI: Table 1's random hyperparameter search with Ray Tune

Run the CLIs from the repository root, e.g. ``python -m experiments.runner --preset fig6 --dry-run``.
"""
