"""tat_mm's version, and the versions of the stack it needs and is tested with.

``import tat_mm`` calls :func:`check_versions` before it touches any other library:

* below what tat_mm's code needs (:data:`REQUIRED`), or with an mmcv that an installed task
  library's own import rejects (mmdet 3.3 and mmseg 1.2 assert mmcv < 2.2.0), it raises an
  ``ImportError`` that names the installed and the needed versions and what to install;
* outside the versions the test suite runs on (:data:`TESTED`), it warns once
  (:class:`UntestedVersionWarning`, a ``UserWarning``) and goes on.

Versions are read from the installed distributions' metadata (nothing is imported), so a broken
library is reported before its own import fails.
"""
import ast
import importlib.metadata
import importlib.util
import warnings
from typing import Callable, Dict, List, Optional

__version__ = '0.1.0'

#: Distribution -> what tat_mm's code needs (PEP 440 specifier); below it tat_mm does not work.
REQUIRED = {
    'torch': '>=2.5',  # torch.serialization.safe_globals / get_unsafe_globals_in_checkpoint
    'mmengine': '>=0.10.0',  # the config, runner and checkpoint internals tat_mm.compat fixes
}
#: Distribution -> the versions the test suite runs on (requirements/stack.txt pins one of each).
TESTED = {
    'torch': '>=2.14,<2.15',
    'mmengine': '>=0.10.7,<0.11',
    'mmcv': '>=2.1.0,<2.2',
    'mmsegmentation': '>=1.2.2,<1.3',
    'mmpretrain': '>=1.2.0,<1.3',
    'mmdet': '>=3.3.0,<3.4',
}
#: Task library module -> its distribution.
TASK_LIBRARIES = {'mmpretrain': 'mmpretrain', 'mmseg': 'mmsegmentation', 'mmdet': 'mmdet'}


class UntestedVersionWarning(UserWarning):
    """A library of the stack is installed in a version tat_mm is not tested with."""


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of ``distribution``, or None.

    Args:
        distribution (str): A distribution name, e.g. ``'mmsegmentation'``. For ``'mmcv'``,
            ``mmcv-lite`` counts too.

    Returns:
        str | None: The version, None when it is not installed.
    """
    names = [distribution] + (['mmcv-lite'] if distribution == 'mmcv' else [])
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def mmcv_range_of(module: str) -> Optional[tuple]:
    """The mmcv versions a task library's ``import`` accepts, read from its ``__init__.py``.

    mmdet, mmseg and mmpretrain assert ``min <= mmcv.__version__ < max`` at import, with the bounds
    as module-level strings (``mmcv_minimum_version`` / ``MMCV_MIN`` ...). They are read without
    importing the library.

    Args:
        module (str): The library's module name, e.g. ``'mmdet'``.

    Returns:
        tuple[str, str] | None: ``(minimum, maximum)`` (maximum excluded), or None if the library
        is not installed or declares no bounds.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith('.py'):
        return None
    with open(spec.origin, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    bounds = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            name = node.targets[0].id.lower()
            if 'mmcv' in name and ('min' in name or 'max' in name):
                bounds['min' if 'min' in name else 'max'] = node.value.value
    return (bounds['min'], bounds['max']) if len(bounds) == 2 else None


def _contains(specifier: str, version: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
    return SpecifierSet(specifier).contains(Version(version).public, prereleases=True)


def check_versions(installed: Callable[[str], Optional[str]] = installed_version,
                   mmcv_range: Callable[[str], Optional[tuple]] = mmcv_range_of) -> List[str]:
    """Fail early on a stack tat_mm cannot work with; warn on one it is not tested with.

    Args:
        installed (callable): Distribution name -> installed version or None. Defaults to
            :func:`installed_version`.
        mmcv_range (callable): Task library module -> the ``(min, max)`` mmcv versions its import
            accepts, or None. Defaults to :func:`mmcv_range_of`.

    Returns:
        list[str]: The untested versions that were warned about (empty when none).

    Raises:
        ImportError: A version below :data:`REQUIRED`, or an mmcv that an installed task library
            refuses at import.
    """
    for name, needed in REQUIRED.items():
        version = installed(name)
        if version is None and importlib.util.find_spec(name) is not None:
            continue  # importable without package metadata (e.g. on PYTHONPATH): not checkable
        if version is None:
            raise ImportError(f'tat_mm needs {name} {needed}, which is not installed. Install the '
                              f'{name} of your environment first (tested: {name} {TESTED[name]}).')
        if not _contains(needed, version):
            raise ImportError(f'tat_mm needs {name} {needed}, but {name} {version} is installed. '
                              f'Upgrade {name} (tested: {TESTED[name]}).')
    mmcv = installed('mmcv')
    for module, distribution in TASK_LIBRARIES.items():
        library = installed(distribution)
        bounds = mmcv_range(module) if library is not None and mmcv is not None else None
        if bounds is not None and not _contains(f'>={bounds[0]},<{bounds[1]}', mmcv):
            raise ImportError(
                f'{distribution} {library} is installed and accepts only mmcv >= {bounds[0]}, '
                f'< {bounds[1]} (its own `import {module}` asserts it, and tat_mm imports it to '
                f'register its distiller), but mmcv {mmcv} is installed. Install an mmcv in that '
                f'range built for your torch (tested: mmcv {TESTED["mmcv"]}; e.g. `mim install '
                f'"mmcv>={bounds[0]},<{bounds[1]}"`), or uninstall {distribution} if you do not '
                'use it.')
    untested = []
    for name, tested in TESTED.items():
        version = installed(name)
        if version is not None and not _contains(tested, version):
            untested.append(f'{name} {version} (tested: {tested})')
    if untested:
        warnings.warn('tat_mm is not tested with ' + ', '.join(untested) + '; see the tested '
                      'versions in docs/en/get_started.md. Silence with warnings.filterwarnings('
                      '"ignore", category=tat_mm.version.UntestedVersionWarning).',
                      UntestedVersionWarning, stacklevel=3)
    return untested

