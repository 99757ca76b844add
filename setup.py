"""Build settings that pyproject.toml cannot express (the metadata is in pyproject.toml).

setuptools writes ``build/`` and ``tat_mm.egg-info/`` into the source tree while it builds a
wheel; here they go to a temporary folder that is deleted when the build ends, so ``pip install
.``, ``pip install -e .`` and ``pip wheel .`` leave a checkout as it was.
"""
import atexit
import os.path as osp
import shutil
import tempfile

from setuptools import setup

_scratch = tempfile.mkdtemp(prefix='tat_mm-build-')
atexit.register(shutil.rmtree, _scratch, ignore_errors=True)

setup(options={
    'build': {'build_base': osp.join(_scratch, 'build')},
    'egg_info': {'egg_base': _scratch},
})
