#!/usr/bin/env python
"""Train the post's autoencoder: a thin shell over ``convae.train.main``."""
import os
import sys

# This clone's convae, also from a Python it is not installed in: convae then
# says in one line which Python to use.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convae.train import main

if __name__ == "__main__":
    sys.exit(main())
