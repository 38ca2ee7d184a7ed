"""Drivers: asyncio sockets (UDP, TCP, TLS), timers and framing glue. All I/O lives here."""
