"""``python -m skinnysip`` and the ``skinnysip`` console script: the command line
(:func:`skinnysip.cli.run`)."""

import gc


def run() -> None:
    """Load the command line with the collector paused, freeze what that made, and run
    :func:`skinnysip.cli.run`.

    Loading click and the CLI makes long-lived objects only (modules, classes, functions): the
    collector's passes over them while they load, and every later full collection, would walk
    them for nothing (~2 ms of ``skinnysip sip options``, issue 12's start-up budget). This
    process is the command line's own, so freezing them (:func:`gc.freeze`) changes nothing
    for anyone else; a program that imports :mod:`skinnysip.cli` keeps its collector as it was.
    """
    from skinnysip.net.realtime import collector_paused

    with collector_paused():
        from skinnysip import cli

        gc.freeze()
    cli.run()


if __name__ == "__main__":
    run()
