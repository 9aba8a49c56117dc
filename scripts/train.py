#!/usr/bin/env python
"""Train the post's autoencoder: a thin shell over ``convae.train.main``."""
import sys

from convae.train import main

if __name__ == "__main__":
    sys.exit(main())
