"""`python -m voicecall_cli` runs the CLI."""

from voicecall_cli.main import main

main()
