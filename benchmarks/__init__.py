"""The benchmark around the :mod:`fewshot` library, in layers; a module imports only from its own layer and
those above it in this list (``tests/test_layers.py`` checks it):

- ``config``: the configuration, frozen dataclasses loaded from ``configs/*.toml``;
- ``engine``: the run and its phases (content-addressed phase store, code digests, the run context);
- ``registry``: what a method and an embedding are, and the registries of them;
- ``builtin``: the built-in embeddings (trained backbones, text features, meta-learners) and methods;
- ``protocols``: the transfer and episodic protocols' execution;
- ``reports``: result files, plots, ``compare`` and the README's tables;
- ``run``: the benchmark command (``python -m benchmarks.run``);
- ``studies``: one-off measurements beside the benchmark (speed, duplicates, text encoders).
"""
