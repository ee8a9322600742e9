"""`python -m gradcheck_client` is the `gradcheck` command."""

import sys

from gradcheck_client.cli import main

sys.exit(main())
