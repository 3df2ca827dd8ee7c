"""Sphinx configuration of the skfusion documentation (built with -W in CI)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import skfusion  # noqa: E402

project = "skfusion"
author = "The skfusion developers"
copyright = "2026, the skfusion developers"
release = skfusion.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
master_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**.zip", "**.md5"]
templates_path = ["_templates"]
html_theme = "alabaster"

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

intersphinx_mapping = {}  # offline builds: no inventories are fetched

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "doc_module": "skfusion",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "reference_url": {"skfusion": None},
    "backreferences_dir": None,
    "abort_on_example_error": True,
}

# Cross-references to sklearn/joblib objects cannot be resolved offline: keep them as text.
nitpicky = False
suppress_warnings = ["config.cache"]
