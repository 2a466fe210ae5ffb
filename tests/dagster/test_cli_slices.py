"""``alqa submit --slices``: ranges parse, and a malformed value is refused instead of becoming a whole-volume revision."""

import pytest

from alqa_core.errors import AlqaInputError
from alqa_dagster.cli import parse_slices as _parse_slices


def test_slices_parse_indices_and_ranges():
    assert _parse_slices("12, 17,30-32,17") == (12, 17, 30, 31, 32)
    assert _parse_slices(None) == ()


@pytest.mark.parametrize("bad", ["", ",", "30-28", "a", "3,,4", "-2"])
def test_malformed_slices_are_refused(bad):
    with pytest.raises(AlqaInputError, match="--slices"):
        _parse_slices(bad)
