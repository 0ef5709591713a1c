"""The package stays readable: small modules and functions, one name per thing (tests/code_size.py)."""

import subprocess
import sys

from code_size import REPO, findings


def test_no_long_module_no_long_function_no_name_defined_twice():
    assert findings([REPO / "workflow"]) == []


def test_the_measure_finds_what_it_should(tmp_path):
    package = tmp_path / "pkg"
    (package / "a").mkdir(parents=True)
    (package / "b").mkdir()
    (package / "a" / "long.py").write_text("def f():\n" + "    x = 1\n" * 60 + "\n" * 350)
    (package / "b" / "same.py").write_text("def f():\n    return 2\n")
    result = subprocess.run([sys.executable, str(REPO / "tests" / "code_size.py"), str(package)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "module of 411 lines" in result.stdout and "f has 61 lines" in result.stdout
    assert "f: defined in" in result.stdout
