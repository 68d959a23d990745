"""Packaging: maps the top-level kernels/ directory to `dit_video.kernels`.

The optional compiled extension `dit_video._C` (csrc/) is added here when asked for
with DIT_VIDEO_BUILD_EXT=1 (see csrc/README.md once it lands).
"""
from setuptools import find_packages, setup

packages = find_packages(include=["dit_video", "dit_video.*"]) + ["dit_video.kernels"]
package_dir = {"dit_video.kernels": "kernels"}

setup(packages=packages, package_dir=package_dir)
