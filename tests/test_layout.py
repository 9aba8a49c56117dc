"""Rules of the code base that a reader relies on, checked on convae's own source."""
import ast
import os
import re

import pytest

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "convae")


def python_files():
    for directory, _, names in os.walk(SOURCE):
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


@pytest.mark.parametrize("path", list(python_files()), ids=lambda p: os.path.relpath(p, SOURCE))
def test_no_long_string_literals_and_public_functions_have_docstrings(path):
    """C lives in c_code/, not in Python strings; every public function says what it does."""
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value.count("\n") < 80, "line {}: a string of {} lines".format(
                node.lineno, node.value.count("\n"))
    public = [node for node in tree.body
              if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]
    for function in public:
        assert ast.get_docstring(function), "{}() has no docstring".format(function.name)


def test_the_readme_s_map_of_the_code_names_every_file():
    """The README's "How the code is laid out" is a newcomer's map: a module
    or C file missing from it (timing.py was) is a room the map leaves out."""
    readme = open(os.path.join(os.path.dirname(SOURCE), "README.md")).read()
    layout = readme.split("## How the code is laid out", 1)[1].split("```")[1]
    listed = set(re.findall(r"[\w.]+", layout))
    for directory, _, names in os.walk(SOURCE):
        for name in names:
            if name.endswith((".py", ".c", ".h")):
                assert name in listed, "{} is not in the README's layout".format(
                    os.path.relpath(os.path.join(directory, name), SOURCE))
