"""`python -m galaxy ...`: the `galaxy` command."""

from galaxy.cli_entry import main

main()
