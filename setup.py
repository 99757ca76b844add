from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open('tat_mm/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(path):
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


setup(
    name='tat_mm',
    version=read_version(),
    description='Target-aware Transformer (TaT) and SoKD distillation for OpenMMLab',
    long_description=open('README.md').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['tat_mm', 'tat_mm.*']),
    python_requires='>=3.9',
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={'tests': read_requirements('requirements/tests.txt')},
    license='Apache-2.0',
)
