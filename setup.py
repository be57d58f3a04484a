"""Builds moepack._moepack with the project's CMake (-DMOEPACK_PYTHON=ON) so
that pip gets the same extension as the CMake build. Metadata is in
pyproject.toml.

    /usr/bin/python3 -m pip install --no-build-isolation .

Environment: MOEPACK_CMAKE_BUILD_DIR reuses a build directory (default
build-pip/ in the source tree, kept for incremental rebuilds);
MOEPACK_BUILD_JOBS sets the parallel jobs (default: all cores).
"""

import os
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        out_dir = os.path.abspath(os.path.dirname(self.get_ext_fullpath(ext.name)))
        build_dir = os.environ.get("MOEPACK_CMAKE_BUILD_DIR") or os.path.join(ROOT, "build-pip", "cmake")
        jobs = os.environ.get("MOEPACK_BUILD_JOBS") or str(os.cpu_count() or 1)
        subprocess.check_call([
            "cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release", "-DMOEPACK_PYTHON=ON",
            "-DMOEPACK_TESTS=OFF", "-DMOEPACK_BENCH=OFF", "-DMOEPACK_FUZZ=OFF",
            f"-DPython3_EXECUTABLE={sys.executable}", f"-DMOEPACK_PYTHON_OUTPUT_DIR={out_dir}"])
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "moepack_python", "-j", jobs])


# setuptools' own build tree goes beside the CMake ones, not into build/.
os.makedirs(os.path.join(ROOT, "build-pip"), exist_ok=True)
setup(
    ext_modules=[CMakeExtension("moepack._moepack")],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": os.path.join(ROOT, "build-pip", "setuptools")},
             "egg_info": {"egg_base": os.path.join(ROOT, "build-pip")}},
)
