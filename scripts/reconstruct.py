#!/usr/bin/env python
"""Plot original/reconstructed test digits: a thin shell over ``convae.reconstruct.main``."""
import sys

from convae.reconstruct import main

if __name__ == "__main__":
    sys.exit(main())
