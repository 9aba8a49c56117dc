#!/usr/bin/env python
"""Write the trained network as an ONNX model: a thin shell over ``convae.export.main``."""
import os
import sys

# This clone's convae, also from a Python it is not installed in: convae then
# says in one line which Python to use.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convae.export import main

if __name__ == "__main__":
    sys.exit(main())
