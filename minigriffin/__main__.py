"""`python -m minigriffin ...` is the same as the `minigriffin` command."""

import sys

from minigriffin.cli import main

sys.exit(main())
