"""What pyproject.toml cannot say: the packages found under src/ plus `trainlab.conf`, the Hydra
configs, which stay at the top of a clone (conf/) and ship inside the package as trainlab/conf
(see [tool.setuptools.package-dir] and [tool.setuptools.package-data] in pyproject.toml).

src/ holds trainlab and its Hydra sweeper, under the `hydra_plugins` namespace package (no
__init__.py: Hydra's plugins share it), where Hydra looks for plugins."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages("src", include=["trainlab*", "hydra_plugins*"], exclude=["*__pycache__"]),
        "trainlab.conf",
    ]
)
