"""`python -m dgc` is the `dgc` command."""

import sys

from dgc.cli import main

sys.exit(main())
