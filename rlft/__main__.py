from rlft.cli import run

run()
