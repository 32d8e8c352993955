"""Optional API keys for the inference and arena APIs (everything under /v1, plus /tokenize and /detokenize).

Keys come from `server.api_keys` (a mapping of key id to key, or a list of keys) or the env var `PALATE_API_KEYS`
(`id:key,id2:key2`, or bare keys), which overrides the config. No keys: no key needed, as before. With keys, a
request needs `Authorization: Bearer <key>`; a missing or wrong key is a 401 in OpenAI's error shape. The admin token
also opens these routes (id `admin`), and the arena UI mounted in the server calls them with a key of its own made at
start-up (id `arena-ui`), so the page keeps working without a key in the browser. `/health`, `/metrics`, the arena
page, `/docs` and `/openapi.json` stay open; `/admin` has its own token.

The authenticated key's id (never the key) is put on `request.state.api_key_id` (None when keys are off), so
admission control can tell clients apart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from core.config import ServerConfig

ENV = "PALATE_API_KEYS"
UI_KEY_ID = "arena-ui"
ADMIN_KEY_ID = "admin"
PROTECTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize")


def key_id(key: str) -> str:
    """The id of a key listed without one: stable, and reveals nothing useful about the key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_env(value: str) -> dict[str, str]:
    """`id:key,key2` -> {id: key, key-<sha>: key2}."""
    keys = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, key = item.partition(":")
        keys.update({name.strip(): key.strip()} if sep and name.strip() and key.strip() else {key_id(item): item})
    return keys


def configured_keys(config: ServerConfig) -> dict[str, str]:
    """Key id -> key, from PALATE_API_KEYS when set, else from server.api_keys."""
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        return parse_env(env)
    if isinstance(config.api_keys, list):
        return {key_id(key): key for key in config.api_keys if key}
    return {name: key for name, key in config.api_keys.items() if key}


class ApiKeys:
    """The keys one server accepts. `ui_key` is the in-process arena UI's own key (None when keys are off)."""

    def __init__(self, config: ServerConfig):
        self._keys = configured_keys(config)
        self._admin = config.resolved_admin_token()
        self.ui_key: str | None = None
        if self._keys:
            self.ui_key = secrets.token_urlsafe(32)
            self._keys[UI_KEY_ID] = self.ui_key

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @staticmethod
    def protects(path: str) -> bool:
        return path.startswith(PROTECTED_PREFIXES)

    def identify(self, authorization: str | None) -> str | None:
        """The id of the key in an `Authorization: Bearer` header, or None when it matches none."""
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        given_bytes = given.strip().encode("utf-8", "backslashreplace")
        found = None
        for name, key in self._keys.items():  # compare with every key: timing says nothing about which matched
            if hmac.compare_digest(given_bytes, key.encode()):
                found = name
        if self._admin and hmac.compare_digest(given_bytes, self._admin.encode()):
            found = found or ADMIN_KEY_ID
        return found
