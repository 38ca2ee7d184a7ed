"""Cisco SCCP ("Skinny") protocol core (sans-IO): message table, codec, station state machine."""
