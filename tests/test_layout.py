"""The package's layout holds at run time: every module imports before any other.

``make lint`` checks the layers with import-linter, on the import statements. Python also
runs a package's ``__init__`` before any of its modules, which no import statement shows;
this test imports each module first, in a fresh interpreter's view of ``mecca``, so that
such a hidden cycle ("partially initialized module") fails here.
"""

import subprocess
import sys

CODE = """
import importlib, importlib.util, pkgutil, sys
import mecca
names = [m.name for m in pkgutil.walk_packages(mecca.__path__, "mecca.")]
if importlib.util.find_spec("napari") is None:  # the plugin needs the napari extra
    names = [n for n in names if not n.startswith("mecca.napari_plugin")]
for name in names:
    for key in [k for k in sys.modules if k == "mecca" or k.startswith("mecca.")]:
        del sys.modules[key]
    importlib.import_module(name)
print(len(names))
"""


def test_every_module_imports_before_any_other():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 90


def test_the_cli_starts_without_torch():
    code = "import sys, mecca.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
