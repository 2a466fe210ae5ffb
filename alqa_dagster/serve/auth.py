"""Who is asking: MONAI Label's login scheme over alqa's annotator credentials, and the ``--no-auth`` loopback mode.

3D Slicer's MONAI Label module logs in unchanged: ``GET /auth/`` says auth
is on, ``POST /auth/token`` exchanges the annotator's name and secret (the
one ``alqa annotators add`` printed) for an access token, ``GET
/auth/token/valid`` checks it, and every later call carries ``Authorization:
Bearer <token>``. The token is ``<name>.<credential>.<expiry>.<HMAC>`` under
the process key: checking it costs an HMAC and one small file read (the
credential must still be active, so revoking an annotator ends their
tokens at once), never the scrypt of the secret. With ``--no-auth`` (loopback
only) every caller is the one local annotator the server was started for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordRequestForm

from alqa_core.annotation.intake.annotators import active_annotator, verify_secret
from alqa_dagster.serve.state import ServeState, is_loopback

router = APIRouter()
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def state_of(request: Request) -> ServeState:
    return request.app.state.alqa


def _mac(key: bytes, payload: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, payload.encode(), hashlib.sha256).digest()).decode().rstrip("=")


def issue_token(state: ServeState, name: str, credential_id: str) -> str:
    expiry = int(time.time() + state.settings.token_hours * 3600)
    payload = f"{name}.{credential_id}.{expiry}"
    return f"{payload}.{_mac(state.key, payload)}"


def token_annotator(state: ServeState, token: str) -> str | None:
    """The annotator an access token was issued to, if it is genuine, unexpired and their credential still active."""
    parts = token.split(".")
    if len(parts) != 4 or len(token) > 256:
        return None
    name, credential_id, expiry, mac = parts
    if not hmac.compare_digest(mac, _mac(state.key, f"{name}.{credential_id}.{expiry}")):
        return None
    if not expiry.isdigit() or int(expiry) < time.time() or state.logged_out(mac):
        return None
    current = active_annotator(state.layout.annotators, name)
    return name if current is not None and current.credential_id == credential_id else None


def bearer(request: Request) -> str | None:
    """The bearer token of the request (any capitalisation of the scheme: MONAI's client sends ``bearer`` or ``Bearer``)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def identify(request: Request) -> str | None:
    """The caller's annotator name, or None (no token, a wrong one, an expired or revoked one)."""
    state = state_of(request)
    if not state.settings.auth:
        client = request.client.host if request.client else None
        return state.settings.local_annotator if is_loopback(client) else None
    token = bearer(request)
    return None if token is None else token_annotator(state, token)


def annotator(request: Request) -> str:
    """Dependency: the authenticated annotator; 401 otherwise (every write is attributed to this name)."""
    who = identify(request)
    if who is None:
        if not state_of(request).settings.auth:
            raise HTTPException(403, "alqa serve --no-auth answers loopback clients only")
        detail = "not authenticated: log in with POST /auth/token (your name and the token alqa annotators add printed)" if bearer(request) is None else "invalid, expired or revoked token: log in again"
        raise HTTPException(401, detail, headers=UNAUTHORIZED)
    return who


@router.get("/auth/")
def auth_info(request: Request) -> dict:
    """MONAI Label's ``auth_enabled``: open to all (the client asks before it has a token)."""
    return {"enabled": state_of(request).settings.auth, "client_id": "alqa", "realm": "alqa"}


@router.post("/auth/token")
def auth_token(request: Request, form: OAuth2PasswordRequestForm = Depends()) -> dict:
    state = state_of(request)
    if not state.settings.auth:
        raise HTTPException(404, "authentication is off (alqa serve --no-auth): no token is needed")
    found = verify_secret(state.layout.annotators, form.username, form.password)
    if found is None:
        raise HTTPException(401, "incorrect annotator name or token", headers=UNAUTHORIZED)
    return {"access_token": issue_token(state, found.name, found.credential_id), "token_type": "bearer"}


@router.post("/auth/logout")
def logout(request: Request, who: str = Depends(annotator)) -> dict:
    """End the caller's access token now (the worklist's "Log out"); other tokens of the same annotator live on."""
    state = state_of(request)
    token = bearer(request)
    if token is not None:
        _, _, expiry, mac = token.split(".")
        state.log_out(mac, float(expiry))
    return {"username": who, "logged_out": True}


@router.get("/auth/token/valid")
def auth_valid(who: str = Depends(annotator)) -> dict:
    return {"username": who, "email": None, "name": who, "roles": ["annotator"]}
