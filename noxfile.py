"""``nox``: the test suite on every Python the project supports, one virtualenv each.

    pip install nox && nox            # 3.10, 3.11, 3.12, 3.13 (those installed)
    nox -s tests-3.12 -- -x tests/core   # one version, pytest arguments after --
"""

import glob
import os

import nox

nox.options.error_on_missing_interpreters = False

# pyenv installs each Python under ~/.pyenv/versions/X.Y.Z/bin, but its shims only answer
# for the versions made global; put them all on PATH so that `nox` alone finds them.
_pyenv_bins = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin")))
os.environ["PATH"] = os.pathsep.join([*_pyenv_bins, os.environ.get("PATH", "")])


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    """Build the extension for this Python and run the whole suite on both cores."""
    session.install(".[test]")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
