from baton_cli.main import run

run()
