from latentgeo.cli import main

main()
