"""Storage URIs, hostile and fine, checked against parse_uri (pydantic) and against the
CRD's CEL rule (the API server): tests/unit/test_uri_rules.py and
tests/integration/test_policy_admission.py. (id, uri, accepted)."""

URI_CASES: list[tuple[str, str, bool]] = [
    ("pvc", "pvc://models/base", True),
    ("pvc-dotfile", "pvc://models/.cache/x", True),
    ("pvc-dots-in-name", "pvc://models/a..b", True),
    ("file", "file:///data/x.jsonl", True),
    ("hf", "hf://org/name", True),
    ("hf-rev", "hf://org/name@main", True),
    ("hf-rev-branch", "hf://org/name@refs/pr/1", True),
    ("s3", "s3://bucket/key", True),
    ("hf-rev-climb", "hf://org/name@../../..", False),
    ("hf-rev-climb-inner", "hf://org/name@main/../x", False),
    ("hf-rev-dot", "hf://org/name@.", False),
    ("hf-rev-empty", "hf://org/name@", False),
    ("hf-rev-empty-segment", "hf://org/name@a//b", False),
    ("hf-rev-space", "hf://org/name@a b", False),
    ("hf-three-parts", "hf://org/name/extra", False),
    ("pvc-climb", "pvc://models/../secrets", False),
    ("pvc-dot", "pvc://models/./x", False),
    ("pvc-empty-segment", "pvc://models/a//b", False),
    ("pvc-backslash", "pvc://models/a\\..\\b", False),
    ("pvc-bad-claim", "pvc://Models/x", False),
    ("file-climb", "file:///data/../etc/shadow", False),
    ("file-relative", "file://data/x", False),
    ("s3-climb", "s3://bucket/../x", False),
    ("http", "http://evil.example/model", False),
    ("no-scheme", "/etc/passwd", False),
]
