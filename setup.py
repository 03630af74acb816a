"""Build facegen_rt and its compiled CPU module facegen_rt._C.

The Triton kernels (kernels/) and the exporters (export/) live in top-level folders
of the repository but install as facegen_rt.kernels and facegen_rt.export, so no
bare `kernels` or `export` module lands in site-packages.
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))
# The extension is built on the machine that runs it, so it targets that CPU
# (AVX-512 and its bf16 instructions where present). FACEGEN_CPU_ARCH overrides.
ARCH = os.environ.get("FACEGEN_CPU_ARCH", "native")

sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp"))
ext = CppExtension(
    "facegen_rt._C",
    sources,
    include_dirs=[os.path.join(HERE, "csrc")],
    extra_compile_args=["-O3", "-std=c++17", "-fopenmp", f"-march={ARCH}", "-ffp-contract=fast"],
    extra_link_args=["-fopenmp"],
)


def mapped(prefix: str, folder: str) -> dict:
    """{facegen_rt.<prefix>[.sub]: folder[/sub]} for a top-level source folder."""
    mapping = {f"facegen_rt.{prefix}": folder}
    for sub in find_packages(where=folder):
        mapping[f"facegen_rt.{prefix}.{sub}"] = os.path.join(folder, *sub.split("."))
    return mapping


package_dir = {**mapped("kernels", "kernels"), **mapped("export", "export")}
packages = find_packages(include=["facegen_rt", "facegen_rt.*"]) + list(package_dir)

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"facegen_rt": ["assets/*", "assets/**/*", "serve/static/*"]},
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)},
)
