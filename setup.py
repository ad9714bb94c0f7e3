"""Ship the top-level non-Python folders inside the wheel as provision/_data/<folder>.

The source tree keeps them at the top (the project layout); an installed wheel finds them
through provision.resources.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_FOLDERS = ("templates", "ignition", "roles", "vagrant", "examples")


class BuildWithData(build_py):
    def run(self):
        super().run()
        here = Path(__file__).parent
        target = Path(self.build_lib) / "provision" / "_data"
        for folder in DATA_FOLDERS:
            src = here / folder
            if src.is_dir():
                shutil.copytree(src, target / folder, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithData})
