from ggufq.cli import entry

entry()
