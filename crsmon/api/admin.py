"""``/v1/admin``: API keys (create, list, revoke) and the audit-chain verifier.

Admin keys manage access; they read no clinical data. A new key's full text is
in the creation response only: the database keeps its keyed hash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from crsmon.api.deps import NO_NUL, ActorDep, ContextDep, SessionDep, SessionsDep
from crsmon.api.errors import ApiError
from crsmon.api.schemas import UNREADABLE_BODY, ErrorBody
from crsmon.db.audit import verify
from crsmon.db.models import ApiKey
from crsmon.services.keys import KeyRefusal, create_key, list_keys, revoke_key

router = APIRouter(prefix="/v1/admin", tags=["admin"])

KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]
UnitName = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)]


class KeyIn(BaseModel):
    """A key to create."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(min_length=1, max_length=120, pattern=NO_NUL)]
    role: Literal["bedside", "reviewer", "analyst", "admin"]
    units: Annotated[list[UnitName], Field(max_length=200)] = []
    """Care units (bedside, reviewer); ``["*"]``: all. Ignored for analyst/admin."""
    expires_at: AwareDatetime | None = None


class KeyOut(BaseModel):
    """A key as listed: never its secret or hash."""

    key_id: str
    name: str
    role: str
    units: list[str]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyOut:
        """The listed view of a key row."""
        fields: dict[str, Any] = {name: getattr(row, name) for name in cls.model_fields}
        return cls.model_validate(fields)


class NewKeyOut(KeyOut):
    """A created key, with its full text: shown this once, never again."""

    key: str


class RevokeIn(BaseModel):
    """Why a key is revoked."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: Annotated[str, Field(min_length=1, max_length=500, pattern=NO_NUL)]


class BreakOut(BaseModel):
    """Where a chain stops verifying."""

    chain: str
    seq: int
    problem: str


class VerificationOut(BaseModel):
    """The audit trail's verification."""

    ok: bool
    chains: int
    events: int
    breaks: list[BreakOut]
    heads: dict[str, str]
    """Each chain's head hash: keep them outside the database to anchor it."""


_REFUSED: dict[int | str, dict[str, Any]] = {
    **UNREADABLE_BODY,
    422: {"model": ErrorBody, "description": "Refused: the field and why."},
}


@router.get("/keys", response_model=list[KeyOut])
def get_keys(session: SessionDep) -> list[KeyOut]:
    """Every key, newest first, without secrets."""
    return [KeyOut.of(row) for row in list_keys(session)]


@router.post("/keys", response_model=NewKeyOut, status_code=201, responses=_REFUSED)
def post_key(
    body: KeyIn, sessions: SessionsDep, context: ContextDep, actor: ActorDep
) -> NewKeyOut:
    """Create a key; the response holds its full text (shown once)."""
    try:
        with sessions.begin() as session:
            row, text = create_key(
                session,
                name=body.name,
                role=body.role,
                units=list(body.units),
                expires_at=body.expires_at,
                actor=actor,
                now=datetime.now(UTC),
                pepper=context.settings.pepper(),
            )
    except KeyRefusal as exc:
        raise ApiError(422, exc.field, exc.reason) from exc
    return NewKeyOut(**KeyOut.of(row).model_dump(), key=text)


@router.post(
    "/keys/{key_id}/revoke",
    response_model=KeyOut,
    responses={
        **UNREADABLE_BODY,
        404: {"model": ErrorBody, "description": "No such key."},
    },
)
def post_revoke(
    key_id: KeyId, body: RevokeIn, sessions: SessionsDep, actor: ActorDep
) -> KeyOut:
    """Revoke a key at once (idempotent); it is kept, so the audit trail resolves."""
    try:
        with sessions.begin() as session:
            row = revoke_key(
                session, key_id, reason=body.reason, actor=actor, now=datetime.now(UTC)
            )
    except KeyRefusal as exc:
        status = 404 if exc.field == "key_id" else 422
        raise ApiError(status, exc.field, exc.reason) from exc
    return KeyOut.of(row)


@router.get("/audit/verify", response_model=VerificationOut)
def get_verify(session: SessionDep) -> VerificationOut:
    """Recompute every audit chain: hashes, links and sequence numbers."""
    result = verify(session)
    return VerificationOut(
        ok=result.ok,
        chains=result.chains,
        events=result.events,
        breaks=[
            BreakOut(chain=b.chain, seq=b.seq, problem=b.problem) for b in result.breaks
        ],
        heads=result.heads,
    )
