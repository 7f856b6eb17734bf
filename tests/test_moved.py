"""Old import paths keep working, with a warning naming the new one."""

import subprocess
import sys

import pytest

from functional_heads.utils import moved


def test_every_old_module_path_forwards_to_an_existing_module_with_a_warning():
    """In a fresh interpreter (nothing imported yet): each old path warns once, naming the new path, and
    gives the new module's objects."""
    code = ("import importlib, warnings\n"
            "from functional_heads.utils import moved\n"
            "for old, new in moved.MODULES.items():\n"
            "    with warnings.catch_warnings(record=True) as caught:\n"
            "        warnings.simplefilter('always')\n"
            "        alias = importlib.import_module(old)\n"
            "    assert [str(w.message).split()[3].rstrip(';') for w in caught] == [new], (old, caught)\n"
            "    target = importlib.import_module(new)\n"
            "    public = [n for n in dir(target) if not n.startswith('_')]\n"
            "    assert public and all(getattr(alias, n) is getattr(target, n) for n in public), old\n"
            "print(len(moved.MODULES))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(moved.MODULES)


def test_moved_names_and_attribute_paths_resolve_to_the_same_objects():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "import functional_heads as fh\n"
            "from functional_heads.tuning import tune\n"
            "from functional_heads.core.heads import thresholds_for_shares\n"
            "try:\n    from functional_heads.evaluation import tune as old\nexcept DeprecationWarning as w:\n"
            "    print('warned:', w)\n"
            "warnings.simplefilter('ignore')\n"
            "from functional_heads.evaluation import tune as old\n"
            "import functional_heads.check as check\n"
            "from functional_heads.evaluation import answers\n"
            "from functional_heads.evaluation.benchmarks import answers as new_answers\n"
            "assert old is tune and fh.heads.thresholds_for_shares is thresholds_for_shares\n"
            "assert check.check_model is fh.check_model and answers.final_answer is new_answers.final_answer\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warned: functional_heads.evaluation.tune moved to functional_heads.tuning.tune" in result.stdout
    assert result.stdout.strip().endswith("ok")


def test_an_unknown_attribute_is_still_an_attribute_error():
    import functional_heads as fh

    with pytest.raises(AttributeError):
        fh.no_such_thing
