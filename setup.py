"""What pyproject.toml cannot say: the packages found under src/ plus `trainlab.conf`, the Hydra
configs, which stay at the top of a clone (conf/) and ship inside the package as trainlab/conf
(see [tool.setuptools.package-dir] and [tool.setuptools.package-data] in pyproject.toml)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "trainlab.conf"])
