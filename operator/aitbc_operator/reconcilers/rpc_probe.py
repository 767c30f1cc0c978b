"""Read each chain's head height from the RPC service (`GET /rpc/head?chain_id=<id>`), with short timeouts.

Failures are only noted, as a short stable category (so a node whose RPC stays unreachable causes no status churn).
Redirects are never followed: the RPC pod is the AitbcNode author's code, and a redirect would make the operator
request whatever URL it names (an SSRF from inside the cluster, with the operator's network position).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

TIMEOUT_SECONDS = 1.5


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Answers a 3xx with the error itself instead of a request to the new location."""

    def redirect_request(self, *_: object, **__: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


@dataclass(frozen=True)
class Height:
    """One chain's height, or why it could not be read."""

    height: int | None
    error: str | None


def get_json(url: str, limit: int = 65536, timeout: float = TIMEOUT_SECONDS) -> tuple[object, str | None]:
    """GET ``url`` (http/https, no redirects, short timeout): (decoded JSON, None) or (None, a short error)."""
    if not url.startswith(("http://", "https://")):
        return None, "bad url"
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return json.loads(response.read(limit)), None
    except urllib.error.HTTPError as exc:
        exc.close()
        return None, "redirect refused" if 300 <= exc.code < 400 else f"HTTP {exc.code}"
    except TimeoutError:
        return None, "timeout"
    except (OSError, urllib.error.URLError, ConnectionError):
        return None, "unreachable"
    except ValueError:
        return None, "bad response"


def _fetch(base_url: str, chain: str) -> Height:
    payload, error = get_json(f"{base_url}/rpc/head?{urllib.parse.urlencode({'chain_id': chain})}")
    if error is not None:
        return Height(None, error)
    height = payload.get("height") if isinstance(payload, dict) else None
    if not isinstance(height, int) or isinstance(height, bool):
        return Height(None, "bad response")
    return Height(height, None)


async def head_heights(base_url: str, chains: list[str]) -> dict[str, Height]:
    """Heights of all chains, fetched concurrently in threads."""
    results = await asyncio.gather(*(asyncio.to_thread(_fetch, base_url, c) for c in chains))
    return dict(zip(chains, results, strict=True))
