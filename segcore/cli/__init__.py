"""The ``segcore`` console script: one module per subcommand, each with ``add_arguments`` and ``run``."""
