"""``python -m weightspace`` runs the command line."""

import sys

from .cli import main

if __name__ == "__main__":  # worker processes (their fork server) import this module too
    sys.exit(main())
