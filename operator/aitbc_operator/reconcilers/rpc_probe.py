"""Read each chain's head height from the RPC service (`GET /rpc/head?chain_id=<id>`), with short timeouts.

Failures are only noted, as a short stable category (so a node whose RPC stays unreachable causes no status churn).
Redirects are never followed: the RPC pod is the AitbcNode author's code, and a redirect would make the operator
request whatever URL it names (an SSRF from inside the cluster, with the operator's network position).
Asynchronous (aiohttp, kopf's own HTTP stack): probes take no thread, so a slow RPC never holds one the Kubernetes
API client needs; proxy variables of the environment are not used.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from dataclasses import dataclass

import aiohttp

TIMEOUT_SECONDS = 1.5
MAX_BODY = 65536


@dataclass(frozen=True)
class Height:
    """One chain's height, or why it could not be read."""

    height: int | None
    error: str | None


def _session(total: float | None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total), trust_env=False)


async def _get(session: aiohttp.ClientSession, url: str, limit: int) -> tuple[object, str | None]:
    if not url.startswith(("http://", "https://")):
        return None, "bad url"
    try:
        async with session.get(url, allow_redirects=False) as response:
            if 300 <= response.status < 400:
                return None, "redirect refused"
            if response.status >= 400:
                return None, f"HTTP {response.status}"
            return json.loads(await response.content.read(limit)), None
    except TimeoutError:
        return None, "timeout"
    except (aiohttp.ClientError, OSError):
        return None, "unreachable"
    except ValueError:
        return None, "bad response"


async def get_json(url: str, limit: int = MAX_BODY) -> tuple[object, str | None]:
    """GET ``url`` (http/https, no redirects): (decoded JSON, None) or (None, a short error). The caller bounds the
    time (``asyncio.timeout``: a TimeoutError)."""
    async with _session(None) as session:
        return await _get(session, url, limit)


async def _fetch(session: aiohttp.ClientSession, base_url: str, chain: str) -> Height:
    url = f"{base_url}/rpc/head?{urllib.parse.urlencode({'chain_id': chain})}"
    payload, error = await _get(session, url, MAX_BODY)
    if error is not None:
        return Height(None, error)
    height = payload.get("height") if isinstance(payload, dict) else None
    if not isinstance(height, int) or isinstance(height, bool):
        return Height(None, "bad response")
    return Height(height, None)


async def head_heights(base_url: str, chains: list[str]) -> dict[str, Height]:
    """Heights of all chains, fetched concurrently."""
    async with _session(TIMEOUT_SECONDS) as session:
        results = await asyncio.gather(*(_fetch(session, base_url, c) for c in chains))
    return dict(zip(chains, results, strict=True))
