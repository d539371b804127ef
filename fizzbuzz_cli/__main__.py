from fizzbuzz_cli.cli import main

main()
