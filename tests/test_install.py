"""tat_mm as a wheel in an existing OpenMMLab environment, used from another project.

The wheel is built from the checkout (``pip wheel --no-deps``) and installed into a second virtual
environment layered over the set-up one: a ``.pth`` file puts the set-up venv's site-packages on
its path (torch, mmcv and the task libraries are not installed twice), and tat_mm comes only from
the wheel (the set-up venv's editable tat_mm is not on that path: its finder is a ``.pth`` file
that a plain path line does not process). From a folder outside the checkout, that environment
then inherits every shipped config both ways (``tat_mm::`` after ``import tat_mm``; the
pure-Python twins with nothing imported first) and trains a distiller with mmseg's own
``tools/train.py``. The wheel must hold every config, ``_base_`` file and twin.
"""
import os
import os.path as osp
import sys
import sysconfig
import zipfile

import pytest
from test_upstream_train import (REPO, random_teacher, run_checked, train_upstream,
                                 write_user_project)

from tat_mm.configs import shipped_configs, twin_files

CONFIGS = osp.join(REPO, 'configs')


def files_under(folder: str):
    """Every file below ``folder`` (``/``-separated relative paths), caches left out."""
    found = set()
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        found |= {osp.relpath(osp.join(root, f), folder).replace(os.sep, '/') for f in files
                  if not f.endswith('.pyc')}
    return found


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """The wheel built from the checkout, as ``pip wheel --no-deps .`` builds it (offline)."""
    out = tmp_path_factory.mktemp('wheel')
    setuptools_outputs = ('build', 'tat_mm.egg-info', 'dist')
    existed = {name for name in setuptools_outputs if osp.exists(osp.join(REPO, name))}
    run_checked([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                 '--no-index', '-q', '-w', str(out), REPO], out)
    created = {name for name in setuptools_outputs if osp.exists(osp.join(REPO, name))} - existed
    assert not created, f'building the wheel wrote {created} into the checkout'
    wheels = list(out.glob('tat_mm-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope='module')
def second_env(wheel, tmp_path_factory):
    """Python of a venv over the set-up venv's site-packages, with tat_mm from ``wheel`` only."""
    env_dir = tmp_path_factory.mktemp('user_env')
    run_checked([sys._base_executable, '-m', 'venv', '--without-pip', str(env_dir)], env_dir)
    python = str(env_dir / 'bin' / 'python')
    purelib = run_checked([python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
                           '["purelib"])'], env_dir).strip().splitlines()[-1]
    with open(osp.join(purelib, '_setup_venv.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    # pip comes from the set-up venv; it installs into this one (and leaves the editable tat_mm
    # of the set-up venv alone: "outside environment")
    run_checked([python, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', str(wheel)],
                env_dir)
    return python, purelib


def test_wheel_holds_the_library_every_config_and_its_twin(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    in_package = {n[len('tat_mm/'):] for n in names if n.startswith('tat_mm/')}
    code = files_under(osp.join(REPO, 'tat_mm')) - {'.mim/model-index.yml'}
    code = {f for f in code if not f.startswith(('.mim/', 'configs/'))}
    assert code <= in_package, f'not in the wheel: {sorted(code - in_package)}'
    configs = {'.mim/configs/' + f for f in files_under(CONFIGS)}
    assert any('/_base_/' in f for f in configs)
    assert configs <= in_package, f'configs not in the wheel: {sorted(configs - in_package)}'
    twins = {'configs/' + f for f in twin_files(CONFIGS)}
    assert twins <= in_package, f'twins not in the wheel: {sorted(twins - in_package)}'
    assert '.mim/model-index.yml' in in_package
    outside = {n.split('/')[0] for n in names} - {'tat_mm', f'{wheel.name.split("-")[0]}-'
                                                  f'{wheel.name.split("-")[1]}.dist-info'}
    assert not outside, f'the wheel ships more than tat_mm: {outside}'
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    requires = [line.split(':', 1)[1].strip() for line in metadata.splitlines()
                if line.startswith('Requires-Dist:') and 'extra ==' not in line]
    never = ('torch', 'torchvision', 'mmengine', 'mmcv', 'mmsegmentation', 'mmdet', 'mmpretrain')
    assert not [r for r in requires if r.split('>')[0].split('=')[0].split('<')[0] in never]


def test_every_twin_is_generated_from_its_config():
    """tat_mm/configs/** is what ``tat_mm.configs.write_python_configs()`` writes (run it after
    adding, renaming or removing a config)."""
    twins = twin_files(CONFIGS)
    package = osp.join(REPO, 'tat_mm', 'configs')
    on_disk = {f for f in files_under(package) if f != '__init__.py'}
    assert on_disk == set(twins), (f'missing: {sorted(set(twins) - on_disk)}, '
                                   f'stale: {sorted(on_disk - set(twins))}')
    for rel, text in twins.items():
        with open(osp.join(package, rel)) as f:
            assert f.read() == text, f'{rel} differs from what write_python_configs() writes'
    assert len(shipped_configs(CONFIGS)) == len(twins) > 70


INHERIT_EVERY_CONFIG = r'''
import functools, os.path as osp, sys, tempfile
import mmengine.config.utils
from mmengine.config import Config
# For every `mmseg::` base MMEngine reloads pkg_resources (is_installed) and re-reads the
# library's ~50 metafiles (~3 s a config here); within this run they give the same answers.
mmengine.config.utils.load = functools.lru_cache(maxsize=None)(mmengine.config.utils.load)
import mmengine.config.config
mmengine.config.config.is_installed = functools.lru_cache(maxsize=None)(
    mmengine.config.config.is_installed)
# 1) the pure-Python twins, before anything imported tat_mm (as the upstream train.py parses)
folder = tempfile.mkdtemp()
from importlib.util import find_spec  # (finds tat_mm without importing it)
root = osp.join(osp.dirname(find_spec('tat_mm').origin), '.mim', 'configs')
paths = []
for dirpath, dirs, files in __import__('os').walk(root):
    dirs[:] = [d for d in dirs if d != '_base_']
    paths += sorted(osp.relpath(osp.join(dirpath, f), root) for f in files if f.endswith('.py'))
# one twin per folder (they are one template, and test_every_twin_is_generated_from_its_config
# checks each file), every config through tat_mm:: below
first_of_folder = {}
for rel in sorted(paths):
    first_of_folder.setdefault(osp.dirname(rel), rel)
twins = {}
for i, rel in enumerate(sorted(first_of_folder.values())):
    module = 'tat_mm.configs.' + rel[:-3].replace('-', '_').replace('/', '.')
    user = osp.join(folder, f'twin_{i}.py')
    with open(user, 'w') as f:
        f.write(f'from mmengine.config import read_base\nwith read_base():\n    from {module} import *\n')
    if i == 0:
        assert 'tat_mm' not in sys.modules
    twins[rel] = Config.fromfile(user).to_dict()
import tat_mm
assert tat_mm.__file__.startswith(sys.prefix), tat_mm.__file__
# 2) tat_mm::<path> as a project config's base, compared with the installed config itself
for i, rel in enumerate(sorted(paths)):
    user = osp.join(folder, f'text_{i}.py')
    with open(user, 'w') as f:
        f.write(f"_base_ = ['tat_mm::{rel}']\n")
    inherited = Config.fromfile(user).to_dict()
    # a twin is the installed config itself, parsed (tat_mm.configs.load_config)
    assert rel not in twins or inherited == twins[rel], rel
# 3) a path that does not exist: the error names where it looked
with open(osp.join(folder, 'missing.py'), 'w') as f:
    f.write("_base_ = ['tat_mm::seg/no_such_config.py']\n")
try:
    Config.fromfile(osp.join(folder, 'missing.py'))
except FileNotFoundError as e:
    assert osp.join(root, 'seg', 'no_such_config.py') in str(e), e
else:
    raise AssertionError('no error for a missing tat_mm:: config')
print('configs', len(paths))
'''


def test_every_config_inherits_from_the_installed_wheel(second_env, tmp_path):
    """From outside the checkout: each shipped config inherits through ``tat_mm::``, its ``_base_``
    chain (local ``_base_/`` files, ``mmseg::`` ...) resolved from the installed location; the
    pure-Python twins (one per folder) give the same config with nothing imported first."""
    python, _ = second_env
    out = run_checked([python, '-c', INHERIT_EVERY_CONFIG], tmp_path)
    assert f'configs {len(shipped_configs(CONFIGS))}' in out, out[-2000:]


def test_upstream_train_script_trains_a_twin_from_the_installed_wheel(second_env, tmp_path):
    """mmseg's own tools/train.py, a project config in the pure-Python style inheriting
    ``tat_mm.configs.demo.seg.tat``: no tat_mm import, no scope table before the parse."""
    python, purelib = second_env
    teacher = random_teacher('seg', str(tmp_path / 'teacher.pth'), CONFIGS)
    project = tmp_path / 'my_project'
    config = write_user_project(project, 'seg', teacher, 'tat_mm.configs.demo.seg.tat',
                                style='python')
    train_upstream(python, 'seg', config, project)
    # the run used the wheel's configs (the teacher's config is found beside the student's)
    dumped = (project / 'work_dirs' / 'seg' / 'distill_seg.py').read_text()
    assert osp.join(purelib, 'tat_mm', '.mim', 'configs', 'demo', 'seg', 'teacher.py') in dumped


# ------------------------------------------------------------------ fix 4 of tat_mm/compat.py
def _user_config(tmp_path, base):
    path = tmp_path / 'user.py'
    path.write_text(f'_base_ = [{base!r}]\n')
    return str(path)


def test_tat_mm_scope_fails_without_the_fix(tmp_path, monkeypatch):
    """MMEngine's own table does not know tat_mm: the error users got before fix 4."""
    import mmengine.config.utils
    from mmengine.config import Config

    import tat_mm  # noqa: F401
    table = dict(mmengine.config.utils.MODULE2PACKAGE)
    config = _user_config(tmp_path, 'tat_mm::demo/cls/student.py')
    assert Config.fromfile(config).model.type == 'ImageClassifier'
    table.pop('tat_mm')
    monkeypatch.setattr(mmengine.config.utils, 'MODULE2PACKAGE', table)
    with pytest.raises(AssertionError, match='mmengine does not support to load tat_mm config'):
        Config.fromfile(config)


def test_tat_mm_bases_build_in_their_own_scopes(tmp_path, monkeypatch):
    """Without the fix MMEngine gives ``tat_mm::`` bases ``_scope_='tat_mm'``: the runner then
    looks for the distiller in a registry that does not exist."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    import tat_mm  # noqa: F401
    config = _user_config(tmp_path, 'tat_mm::demo/cls/tat.py')
    cfg = Config.fromfile(config)
    assert cfg.model.type == 'ClsDistiller' and '_scope_' not in cfg.model
    assert cfg.model.student.get('_scope_') == 'mmpretrain'  # its own base's, kept
    monkeypatch.setattr(Config, '_get_cfg_path', staticmethod(Config._get_cfg_path.__wrapped__))
    unfixed = Config.fromfile(config)
    assert unfixed.model.get('_scope_') == 'tat_mm'
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(KeyError, match='ClsDistiller is not in the'):
            MODELS.build(unfixed.model)


def test_installed_path_of_an_editable_install(monkeypatch):
    """MMEngine answers ``<site-packages>/tat_mm`` for a distribution it finds; the fix answers
    where tat_mm is imported from when that folder does not exist (an editable install)."""
    import mmengine.utils

    import tat_mm
    here = osp.dirname(tat_mm.__file__)
    assert mmengine.utils.get_installed_path('tat_mm') == here
    assert mmengine.utils.get_installed_path('mmseg') == osp.dirname(
        __import__('mmseg').__file__)  # unchanged for the others
    unfixed = mmengine.utils.get_installed_path.__wrapped__('tat_mm')
    if unfixed != here:  # the set-up venv's editable install
        assert not osp.isdir(unfixed)


def _twin_user_config(tmp_path, module: str) -> str:
    path = tmp_path / 'user_twin.py'
    path.write_text(f'from mmengine.config import read_base\nwith read_base():\n'
                    f'    from {module} import *  # noqa: F401,F403\n')
    return str(path)


def test_a_config_that_does_not_exist_names_the_path_looked_for(tmp_path):
    """``tat_mm::`` and twin paths with a typo: each error names the file it looked for."""
    from mmengine.config import Config
    from mmengine.config.utils import ConfigParsingError

    import tat_mm
    here = osp.dirname(tat_mm.__file__)
    with pytest.raises(FileNotFoundError) as info:
        Config.fromfile(_user_config(tmp_path, 'tat_mm::seg/no_such_config.py'))
    assert osp.join(here, '.mim', 'configs', 'seg', 'no_such_config.py') in str(info.value)
    with pytest.raises(ConfigParsingError) as info:
        Config.fromfile(_twin_user_config(tmp_path, 'tat_mm.configs.seg.no_such_config'))
    assert osp.join(here, 'configs', 'seg', 'no_such_config.py') in str(info.value)


#: Parses a pure-Python config inheriting a twin, in a process that has not imported tat_mm.
PARSE_TWIN = r'''
import sys
from mmengine.config import Config
from mmengine.config.utils import ConfigParsingError
try:
    print('parsed', Config.fromfile(sys.argv[1]).model.type)
except ConfigParsingError as e:
    print('error', e)
'''


def test_editable_install_twins_need_tat_mm_imported_first(tmp_path):
    """The editable install of the set-up venv (``pip install -e .``, PEP 660): MMEngine's own
    lookup, which the task libraries' train.py uses before anything imports tat_mm, answers
    ``site-packages/tat_mm`` (where the distribution's metadata is) and there is no such folder:
    the twin is not found. That lookup is MMEngine's (``get_installed_path``: pkg_resources'
    location + the package name) and runs before any tat_mm code; no packaging setting moves
    it. With tat_mm imported first (tat_mm's tools), fix 4 answers the checkout. What
    docs/en/user_guides/own_project.md says to use instead (a base by path) is trained by the
    task libraries' train.py in tests/test_upstream_train.py, in this same venv."""
    from importlib.metadata import distribution
    direct_url = distribution('tat_mm').read_text('direct_url.json') or ''
    if '"editable": true' not in direct_url:
        pytest.skip('tat_mm is not an editable install here')
    config = _twin_user_config(tmp_path, 'tat_mm.configs.demo.cls.student')
    unimported = run_checked([sys.executable, '-c', PARSE_TWIN, config], tmp_path)
    looked_in = osp.join(sysconfig.get_paths()['purelib'], 'tat_mm', 'configs', 'demo', 'cls',
                         'student.py')
    assert f'error {looked_in} not found!' in unimported, (
        'MMEngine now finds the twins of an editable install: update the editable-install '
        f'paragraph of docs/en/user_guides/own_project.md\n{unimported[-2000:]}')
    from mmengine.config import Config

    import tat_mm  # noqa: F401  (here, in this process)
    assert Config.fromfile(config).model.type == 'ImageClassifier'
