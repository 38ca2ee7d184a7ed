"""``python -m skinnysip``: the command line (:func:`skinnysip.cli.run`)."""

from skinnysip.cli import run

if __name__ == "__main__":
    run()
