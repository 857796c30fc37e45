"""One error shape for every service: what a body that is not JSON, or not sent as JSON, gets."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from shared.http import install_error_handlers


class Body(BaseModel):
    reason: str


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/decide")
    async def decide(body: Body) -> dict[str, str]:
        return {"reason": body.reason}

    return app


async def _post(content: bytes, content_type: str | None) -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/decide", content=content, headers=headers)


async def test_json_in_any_json_content_type_is_read():
    for content_type in ("application/json", "application/json; charset=utf-8"):
        response = await _post(b'{"reason": "ok"}', content_type)
        assert response.status_code == 200, (content_type, response.text)
    assert (await _post(b'{"reason": "ok"}', "application/merge-patch+json")).status_code == 200


async def test_another_content_type_is_415_naming_it():
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "text/csv"):
        response = await _post(b'{"reason": "ok"}', content_type)
        assert response.status_code == 415, (content_type, response.text)
        assert content_type in response.json()["detail"]
    bare = await _post(b'{"reason": "ok"}', None)
    assert bare.status_code == 415 and "no content type" in bare.json()["detail"]
    # No body at all is a missing body, not a content type.
    assert (await _post(b"", None)).status_code == 422


async def test_a_body_that_is_not_json_is_400_and_an_invalid_one_422():
    malformed = await _post(b'{"reason": ', "application/json")
    assert malformed.status_code == 400, malformed.text
    assert malformed.json()["detail"][0]["type"] == "json_invalid"
    invalid = await _post(b'{"reason": 5}', "application/json")
    assert invalid.status_code == 422, invalid.text
    assert invalid.json()["detail"][0]["loc"] == ["body", "reason"]
