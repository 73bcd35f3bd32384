from shipyard.cli.main import main

main()
