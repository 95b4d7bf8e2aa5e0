"""oras-py as kernlab uses it (imported only when a registry is used: oras-py and requests
take about half a second to import). See oci.py for why each change."""

from __future__ import annotations

from typing import Any

import oras.auth
import oras.container
import oras.provider
import oras.utils
import requests

__all__ = ["Auth", "Oras", "oras", "requests"]


class Auth(oras.auth.TokenAuth):
    """oras-py's token (Bearer) backend, which also answers Basic challenges."""

    def authenticate_request(self, original: requests.Response, headers: dict, refresh: bool = False):
        challenge = original.headers.get("Www-Authenticate", "")
        if challenge.lower().startswith("basic"):
            basic = getattr(self, "_basic_auth", None)
            if not basic:
                return headers, False
            return {**(headers or {}), "Authorization": f"Basic {basic}"}, True
        if not challenge:
            return headers, False
        return super().authenticate_request(original, headers, refresh)


class Oras(oras.provider.Registry):
    """oras-py's Registry without its sleeping retry loop (kernlab decides what to retry)."""

    def do_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)
