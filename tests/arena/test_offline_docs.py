"""/docs renders from installed files: the page references only local assets, and they are served."""

from __future__ import annotations

import re


def test_docs_page_uses_local_assets_only(fake_client):
    page = fake_client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert urls and all(not u.startswith(("http://", "https://", "//")) for u in urls), urls
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        served = fake_client.get(f"/docs-static/{asset}")
        assert served.status_code == 200 and len(served.content) > 10_000
    assert fake_client.get("/openapi.json").json()["info"]["title"] == "Palate"
