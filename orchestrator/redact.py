"""Credentials out of anything scalesweep prints: URIs may carry a password, errors may quote them.

A tracking URI such as `https://alice:s3cret@mlflow.example.com` or
`postgresql://svc:s3cret@db/mlflow?password=...` is redacted to `https://alice:***@...`, and the
values of MLflow's credential variables never appear in a message, wherever a library quoted them.
"""

from __future__ import annotations

import os
import re

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host (also a bare token: scheme://token@host)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*)(?::[^/\s@]*)?@")
# ?password=...&token=... in a query string (SQLAlchemy and libpq accept credentials there)
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|secret|api_key|access_token)=)[^&#\s]*", re.IGNORECASE)
# Environment variables whose values are credentials (MLflow's, and the ones its clients read).
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD", "DATABRICKS_TOKEN")


def redact_uri(uri: str) -> str:
    """The URI with any password (or bare token) in its user part and query replaced by ***."""

    def userinfo(match: re.Match) -> str:
        has_password = ":" in match.group(0)[len(match.group("scheme")) :]
        user = match.group("user")
        return f"{match.group('scheme')}{user}:{MASK}@" if has_password else f"{match.group('scheme')}{MASK}@"

    return _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, _USERINFO.sub(userinfo, uri))


def redact_secrets(text: str) -> str:
    """`text` with every URI's credentials and every credential variable's value masked."""
    text = redact_uri(text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:  # a one-letter 'password' would mask every such letter
            text = text.replace(value, MASK)
    return text
