"""One module per ``rtsal`` subcommand; shared option groups live in :mod:`rtsal.commands.common`."""
