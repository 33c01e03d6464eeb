"""The numbers an example's comment states are the numbers its spec uses (issue 12: the
S3T example said 4 slices and 4 orders and used 2 and 2)."""

import re
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
S3T_CLAIM = re.compile(r"(\d+) shards x (\d+) slices with (\d+) \w+ slice orders")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*s3t*.yaml")), ids=lambda p: p.name)
def test_s3t_example_comment_matches_its_spec(path):
    text = path.read_text()
    claim = S3T_CLAIM.search(text)
    assert claim, f"{path.name}: the comment states the layout"
    spec = yaml.safe_load(text)["spec"]["s3t"]
    stated = tuple(int(x) for x in claim.groups())
    assert stated == (spec["shards"], spec["slices"], spec["orders"])
