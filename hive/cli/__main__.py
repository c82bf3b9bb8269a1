"""`python -m hive.cli`."""

from hive.cli import main

main()
