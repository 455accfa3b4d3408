"""Which packages the wheel holds; everything else about the distribution is in pyproject.toml.

The three floors live in top-level folders and install as ``statbus.plugins``,
``statbus.workers`` and ``statbus.pipeline`` (docs/design.md §2, "Floors and rooms").  The packages
under them are found, not listed: a folder with an ``__init__.py`` cannot be left out.
tests/test_packaging.py builds the wheel and imports every module from it.
"""

from setuptools import find_packages, setup

FLOORS = ("plugins", "workers", "pipeline")
NOT_SHIPPED = ("plugins.examples", "plugins.examples.*")  # the example plugin is its own distribution

setup(
    package_dir={f"statbus.{floor}": floor for floor in FLOORS},
    packages=[
        f"statbus.{name}"
        for name in find_packages(include=[p for floor in FLOORS for p in (floor, f"{floor}.*")], exclude=NOT_SHIPPED)
    ],
)
