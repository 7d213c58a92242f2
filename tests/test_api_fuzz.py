"""Fuzzed API reads and triggers: never a 5xx, never a half-written row."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_jobs import (
    TOKEN,
    jobs_fixture,  # noqa: F401 - the jobs fixture
)

# -- fuzz: reads and triggers never get a 5xx -----------------------------------------


text_or_number = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "-1", "0", "1", "1e9", "nan", "%00", "../..", "queued"]),
)


# Header values as WSGI hands them over (latin-1 text for bytes): "\xff" is a byte
# that is not UTF-8, which made Bottle raise (issue 9, item 12).
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
auth_headers = st.dictionaries(
    st.sampled_from(["Authorization", "Sec-Fetch-Site", "X-CSRF-Token", "Cookie"]),
    header_text | st.sampled_from(["Bearer \xff", f"Bearer {TOKEN}\xff", "\xff", "cross-site"]),
    max_size=3,
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(
        ["/api/builds/{}", "/api/builds/{}/log", "/builds/{}", "/api/jobs/{}", "/jobs/{}"]
    ),
    segment=text_or_number,
    query=st.dictionaries(
        st.sampled_from(["job", "status", "key", "limit", "before", "offset"]),
        text_or_number,
        max_size=4,
    ),
    headers=auth_headers,
    token=st.booleans(),
)
def test_fuzzed_reads_never_get_a_5xx(
    web, jobs, monkeypatch, route, segment, query, headers, token
):
    if token:
        monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    else:
        monkeypatch.delenv("LIGHTCI_TOKEN", raising=False)
    path = route.format(quote(segment, safe="")) + "?" + urlencode(query)
    for method, base in (
        ("GET", path),
        ("GET", "/api/builds?" + urlencode(query)),
        ("GET", "/"),
        ("POST", "/api/builds/1/cancel"),
    ):
        answer = web.request(method, base, headers=headers)
        assert answer.status < 500, (base, headers, answer)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(["branch", "commit", "params", "flavor", "x"]), children, max_size=3
            )
        ),
        max_leaves=10,
    )
)
def test_fuzzed_trigger_bodies_never_get_a_5xx_or_a_half_row(web, jobs, body):
    before = len(jobs.builds())
    answer = web.post("/api/jobs/app/builds", body=json.dumps(body).encode())
    assert answer.status in (201, 400), answer
    assert len(jobs.builds()) == before + (answer.status == 201)
