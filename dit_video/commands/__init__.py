"""One module per ``dit-video`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
