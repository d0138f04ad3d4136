"""Build hook: the wheel carries the default config, prompt templates, playbooks and
rules (``bot/shipped.py`` finds them under ``bot/_shipped``). Everything else is in
pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("configs", "playbooks", "rules")


class BuildWithShipped(build_py):
    def run(self) -> None:
        super().run()
        for name in SHIPPED:
            target = Path(self.build_lib) / "bot" / "_shipped" / name
            shutil.rmtree(target, ignore_errors=True)  # a file removed since the last build
            shutil.copytree(Path(name), target)


setup(cmdclass={"build_py": BuildWithShipped})
