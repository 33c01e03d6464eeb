"""The CRD's URI rule (a CEL `matches` with a readable message) and parse_uri accept and
refuse the same URIs (issue 11: the CRD accepted hf://org/name@../../.. that pydantic
refused later). The same table runs through the API server in
tests/integration/test_policy_admission.py."""

import re

import pytest
from tests.uri_cases import URI_CASES

from modelops_api.storage import URI_PATTERN, URI_RULE, parse_uri


@pytest.mark.parametrize(("case", "uri", "accepted"), URI_CASES, ids=[c[0] for c in URI_CASES])
def test_pattern_and_parser_agree(case, uri, accepted):
    try:
        parse_uri(uri)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed is accepted, f"parse_uri on {uri!r}"
    assert (re.fullmatch(URI_PATTERN, uri) is not None) is accepted, f"pattern on {uri!r}"


def test_the_rule_message_names_the_forms_not_the_regex():
    assert URI_RULE["message"] == (
        "expected pvc://claim/path, file:///path, hf://org/name[@rev], s3://bucket/key or gs://bucket/key"
    )
    assert URI_PATTERN in URI_RULE["rule"]
