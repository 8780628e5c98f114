"""`maxcli.graph` (mirrors `max.graph`): only the weights names are needed here."""
