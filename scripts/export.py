#!/usr/bin/env python
"""Write the trained network as an ONNX model: a thin shell over ``convae.export.main``."""
import sys

from convae.export import main

if __name__ == "__main__":
    sys.exit(main())
