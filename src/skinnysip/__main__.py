"""``python -m skinnysip``: the command line (:func:`skinnysip.cli.main`)."""

from skinnysip.cli import main

if __name__ == "__main__":
    main()
