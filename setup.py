"""Package layout: `maxcli/` plus the top-level `kernels/` folder shipped as `maxcli.kernels`.

A top-level import name `kernels` would collide with an unrelated package on the index, so the folder is
mapped under the `maxcli` namespace (pyproject.toml holds everything else).
"""
from setuptools import find_packages, setup

maxcli_packages = find_packages(include=["maxcli", "maxcli.*"])
kernel_packages = ["maxcli.kernels"] + [f"maxcli.{p}" for p in find_packages(include=["kernels.*"])]

setup(
    packages=maxcli_packages + kernel_packages,
    package_dir={"maxcli": "maxcli", "maxcli.kernels": "kernels"},
    package_data={"maxcli": ["py.typed"]},
)
