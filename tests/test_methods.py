"""The method registry of the edit orchestration."""
import pytest

from massedit.editing.run import method_entry


def test_registered_methods_and_their_spreading():
    assert method_entry("eamet")[1] == "linear"
    assert method_entry("memit")[1] == "linear"


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown method 'mend'.*eamet.*memit"):
        method_entry("mend")
