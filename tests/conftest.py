"""Test isolation shared by every test file, and the ``cuda`` marker's skip."""
import gc

import pytest
import torch
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True, scope='module')
def fresh_default_scope():
    """Start every test file with no MMEngine default scope, and put the previous one back after.

    ``init_default_scope``, runners and ``init_model`` set the scope process-wide; with
    pytest-xdist a worker runs whichever files it is given in one process, so a file would
    otherwise see the scope the previous file left (e.g. ``mmdet`` before an mmpretrain build).
    """
    saved = DefaultScope._instance_dict.copy()
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``cuda`` where there is no GPU: pytest reports them as skipped."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (torch.cuda.is_available() is False)')
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(skip)


def pytest_collection_finish(session):
    """Once every test module (and so torch and the mm* libraries) is imported, move the objects
    alive now out of the garbage collector's reach: MMEngine calls ``gc.collect()`` for every
    dataset it builds, and each full collection walked these millions of objects (~0.3 s)."""
    gc.freeze()
