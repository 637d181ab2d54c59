"""The plain-email fast path never disagrees with email_validator, the authority it stands in for."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from telecrm.domain.identity import _plain_email

local = st.from_regex(r"[A-Za-z0-9._%+!#'-]{1,70}", fullmatch=True)
label = st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True)
tld = st.sampled_from(
    ["com", "org", "health", "io", "co", "test", "local", "invalid", "x", "museum"]
)


@settings(max_examples=400, deadline=None)
@given(local, st.lists(label, min_size=1, max_size=3), tld)
def test_fast_path_agrees_with_email_validator(
    local_part: str, labels: list[str], top: str
) -> None:
    address = f"{local_part}@{'.'.join([*labels, top])}"
    fast = _plain_email(address)
    if fast is None:
        return  # undecided: the caller asks email_validator
    try:
        authority = validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise AssertionError(
            f"fast path accepted what email_validator refuses: {address!r}"
        ) from None
    assert fast == authority
