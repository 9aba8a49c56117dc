#!/usr/bin/env python
"""Plot original/reconstructed test digits: a thin shell over ``convae.reconstruct.main``."""
import os
import sys

# This clone's convae, also from a Python it is not installed in: convae then
# says in one line which Python to use.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convae.reconstruct import main

if __name__ == "__main__":
    sys.exit(main())
