from msgstatus.cli import main

main()
