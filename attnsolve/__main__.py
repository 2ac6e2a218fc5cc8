"""`python -m attnsolve ...`: the same as the `attnsolve` console script."""

import sys

from .cli import main

sys.exit(main())
