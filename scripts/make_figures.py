#!/usr/bin/env python
"""Regenerate all figures: a thin shell over ``convae.make_figures.main``."""
import sys

from convae.make_figures import main

if __name__ == "__main__":
    sys.exit(main())
