from badged.cli import run

run()
