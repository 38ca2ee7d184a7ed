from skinnysip.cli import main

main()
