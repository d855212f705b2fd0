"""Package mapping that pyproject.toml cannot express on its own.

The repository keeps `core/` and `plugins/` at the top level (the layout contributors navigate), while the
installed distribution has exactly one import root, `specplug`. setuptools' `packages.find` cannot add a prefix
to what it finds, so the dotted names are derived here from the directory trees.
"""

from setuptools import find_packages, setup

ROOTS = {"specplug": "specplug", "specplug.core": "core", "specplug.plugins": "plugins"}


def _packages() -> list[str]:
    names = []
    for dotted, directory in ROOTS.items():
        names.append(dotted)
        names.extend(f"{dotted}.{sub}" for sub in find_packages(directory))
    # specplug/ itself only holds the CLI; its mapped children are listed under their own roots.
    return sorted(set(names))


setup(packages=_packages(), package_dir=ROOTS)
