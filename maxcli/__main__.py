from maxcli.cli.main import entry

entry()
