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


async def _fetch(session: aiohttp.ClientSession, base_url: str, chain: str) -> Height:
    url = f"{base_url}/rpc/head?{urllib.parse.urlencode({'chain_id': chain})}"
    if not url.startswith(("http://", "https://")):
        return Height(None, "bad url")
    try:
        async with session.get(url, allow_redirects=False) as response:
            if 300 <= response.status < 400:
                return Height(None, "redirect refused")
            if response.status >= 400:
                return Height(None, f"HTTP {response.status}")
            payload = json.loads(await response.content.read(MAX_BODY))
    except TimeoutError:
        return Height(None, "timeout")
    except (aiohttp.ClientError, OSError):
        return Height(None, "unreachable")
    except ValueError:
        return Height(None, "bad response")
    height = payload.get("height") if isinstance(payload, dict) else None
    if not isinstance(height, int) or isinstance(height, bool):
        return Height(None, "bad response")
    return Height(height, None)


async def head_heights(base_url: str, chains: list[str]) -> dict[str, Height]:
    """Heights of all chains, fetched concurrently."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        results = await asyncio.gather(*(_fetch(session, base_url, c) for c in chains))
    return dict(zip(chains, results, strict=True))
