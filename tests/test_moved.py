"""Old import paths keep working, with a warning naming the new one. Each check runs in a fresh
interpreter, where nothing is imported yet."""

import subprocess
import sys
import textwrap

import pytest

from functional_heads.utils import moved


def fresh_python(code: str) -> str:
    """stdout of `code` run by a new interpreter (which must succeed)."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_old_module_path_forwards_to_an_existing_module_with_a_warning():
    out = fresh_python("""
        import importlib, warnings
        from functional_heads.utils import moved
        for old, new in moved.MODULES.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                alias = importlib.import_module(old)
            assert [str(w.message).split()[3].rstrip(';') for w in caught] == [new], (old, caught)
            target = importlib.import_module(new)
            public = [n for n in dir(target) if not n.startswith('_')]
            assert public and all(getattr(alias, n) is getattr(target, n) for n in public), old
        print(len(moved.MODULES))
    """)
    assert int(out) == len(moved.MODULES)


def test_moved_names_and_attribute_paths_resolve_to_the_same_objects():
    out = fresh_python("""
        import warnings
        warnings.simplefilter('error', DeprecationWarning)
        import functional_heads as fh
        from functional_heads.tuning import tune
        from functional_heads.core.heads import thresholds_for_shares
        try:
            from functional_heads.evaluation import tune as old
        except DeprecationWarning as warning:
            print('warned:', warning)
        warnings.simplefilter('ignore')
        from functional_heads.evaluation import tune as old
        import functional_heads.check as check
        from functional_heads.evaluation import answers
        from functional_heads.evaluation.benchmarks import answers as new_answers
        assert old is tune and fh.heads.thresholds_for_shares is thresholds_for_shares
        assert check.check_model is fh.check_model and answers.final_answer is new_answers.final_answer
        print('ok')
    """)
    assert "warned: functional_heads.evaluation.tune moved to functional_heads.tuning.tune" in out
    assert out.strip().endswith("ok")


def test_an_unknown_attribute_is_still_an_attribute_error():
    import functional_heads as fh

    with pytest.raises(AttributeError):
        fh.no_such_thing
