"""GET some URLs from inside a network namespace; print one JSON object {url: {"status", "body"}}.

    ip netns exec NS python tests/netns/http_get.py http://127.0.0.1:9100/metrics ...

Used by tests/test_multihost_netns.py to read the roles' /metrics, which listen on the
namespace's loopback. A URL that does not answer gets ``"status": null`` and the error as body.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def get(url: str, timeout: float) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return {"status": r.status, "body": r.read().decode("utf-8", "replace")}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode("utf-8", "replace")}
    except OSError as exc:
        return {"status": None, "body": f"{type(exc).__name__}: {exc}"}


def main(urls: list[str]) -> int:
    print(json.dumps({url: get(url, 3.0) for url in urls}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
