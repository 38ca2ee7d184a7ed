"""User agents (softphones) built on the protocol core and the drivers."""
