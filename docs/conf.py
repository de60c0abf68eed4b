"""Sphinx configuration: the API reference is built from the package's docstrings."""

import fastbatch

project = "fastbatch"
author = "fastbatch developers"
release = version = fastbatch.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
napoleon_use_ivar = True  # "Attributes:" sections as fields, not duplicate entries
