"""Stand-in for the get-pip.py bootstrap script of ansible-test.

ansible-test puts pip into each fresh sanity virtual environment by running
`python get_pip_VERSION.py --disable-pip-version-check pip==V setuptools==V wheel==V`,
a script it downloads from ci-files.testing.ansible.com (unreachable from the build machines,
which reach PyPI only). This script does the same job with the pip wheel the machine already
has (Debian: python3-pip-whl, which python3-venv needs; other builds: ensurepip's own wheel):
it runs that pip from the wheel, as get-pip.py runs the pip it embeds, and pip installs the
pinned versions from PyPI into the virtual environment. sanity.sh copies it where ansible-test
looks for its cached download.
"""

import glob
import os
import sys


def pip_wheel():
    """The newest pip wheel found on this machine."""
    dirs = ['/usr/share/python-wheels']
    try:
        import ensurepip
        dirs.append(os.path.join(os.path.dirname(ensurepip.__file__), '_bundled'))
    except ImportError:
        pass
    found = []
    for d in dirs:
        found.extend(glob.glob(os.path.join(d, 'pip-*.whl')))
    if not found:
        sys.exit('no pip wheel found in %s: install python3-pip-whl (or python3-venv)'
                 % ', '.join(dirs))
    return sorted(found)[-1]


def main():
    # pip runs from its wheel (a zip on sys.path), the way ensurepip and get-pip.py run it.
    sys.path.insert(0, pip_wheel())
    from pip._internal.cli.main import main as pip_main
    sys.exit(pip_main(['install'] + sys.argv[1:]))


if __name__ == '__main__':
    main()
