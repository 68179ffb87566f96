#!/bin/sh
# ansible-test sanity of the iifs.iifs collection, on a machine that reaches PyPI but not
# ci-files.testing.ansible.com (where ansible-test downloads its pip bootstrap script).
#
#   contrib/ansible/sanity.sh [more ansible-test sanity options, e.g. --test pylint]
#
# Needs: ansible-core (ansible-test), python3-venv (venv and the pip wheel, for the sanity
# tests' own virtual environments), and PyPI, from which those environments get their pinned
# tools (pylint, pycodestyle, yamllint, voluptuous...) the first time (about 90 s; later runs
# reuse them: a few seconds).
#
# ANSIBLE_TEST_HOME (default ~/.cache/iifs-ansible-test) is the HOME ansible-test runs with:
# its virtual environments and the stand-in pip bootstrap live there, not in ~/.ansible.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
collection="$here/ansible_collections/iifs/iifs"
home=${ANSIBLE_TEST_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/iifs-ansible-test}
# Debian's python3 (pyenv's, earlier on PATH, may lack venv or be another version).
python=${ANSIBLE_TEST_PYTHON:-/usr/bin/python3}

command -v ansible-test >/dev/null || { echo "sanity.sh: ansible-test not found (apt-get install ansible-core)" >&2; exit 1; }
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# ansible-test uses its cached download when there is one: put the stand-in there, under
# every name ansible-test versions use for it (the pip version is in the name).
mkdir -p "$home/.ansible/test/cache"
# Absolute: ansible-test runs in the collection, and must not find its own files there.
home=$(cd "$home" && pwd)
for pip in 21.3.1 20.3.4; do
    cp "$here/sanity/get_pip.py" "$home/.ansible/test/cache/get_pip_$(echo $pip | tr . _).py"
done

# ansible-test finds the collection by its path (…/ansible_collections/NAMESPACE/NAME).
cd "$collection"
HOME="$home" exec ansible-test sanity --color no --python "$version" \
    --python-interpreter "$python" "$@"
