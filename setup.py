"""convae: the 2016 post "Convolutional Autoencoder for Dummies", runnable today."""
import sys

from setuptools import find_packages, setup

# Theano 1.0.5 (the last Theano) runs only with numpy < 1.24, whose wheels stop
# at CPython 3.11, and Theano itself imports modules removed in 3.12.
if not ((3, 9) <= sys.version_info[:2] <= (3, 11)):
    sys.exit("convae needs CPython 3.9 to 3.11 (this is {}.{}): Theano 1.0.5 "
             "runs only with numpy < 1.24, which has no wheels for newer "
             "Pythons.".format(*sys.version_info[:2]))

setup(
    name="convae",
    version="0.1.0",
    description="A faithful, runnable reproduction of the Lasagne/Theano post "
                "'Convolutional Autoencoder for Dummies' (2016)",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["convae", "convae.*"]),
    python_requires=">=3.9,<3.12",
    install_requires=[
        "numpy>=1.20,<1.24",
        "scipy>=1.6,<1.11",
        "matplotlib>=3.5,<3.8",
        "Theano==1.0.5",
        "Lasagne>=0.1",
        "tqdm>=4.60",
        "onnx>=1.14",
    ],
    extras_require={"test": ["pytest"]},
    package_data={"convae": ["weights/*.npz", "weights/*.jsonl",
                             "runtime/c_code/*.c", "runtime/c_code/*.h"]},
    entry_points={"console_scripts": [
        "convae-train = convae.train:main",
        "convae-reconstruct = convae.reconstruct:main",
        "convae-figures = convae.make_figures:main",
        "convae-export = convae.export:main",
    ]},
)
