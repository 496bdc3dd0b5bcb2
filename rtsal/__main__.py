from rtsal.cli import entry

entry()
