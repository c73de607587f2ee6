import sys

from ditkit.cli.main import main

sys.exit(main())
