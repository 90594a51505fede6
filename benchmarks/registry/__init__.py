"""What a method and an embedding are, and the registries of them (the built-in ones: :mod:`benchmarks.builtin`)."""
