"""`python -m ditkit.bench ...` is `ditkit bench ...`."""

import sys

from ditkit.cli.main import main

sys.exit(main(["bench", *sys.argv[1:]]))
