"""Durable, content-addressed, versioned shard context in Redis.

* Each document's text is stored once under `blob:<sha256>` (shared by every shard and
  version; identical text is never stored twice).
* A version is an immutable manifest (`shard:<id>:v:<n>`): the ordered document names and
  digests, the vendor and model whose tokenizer counted it, and the count.
* `shard:<id>:head` points at the current version. Appending documents, or loading a new
  set, writes a new version; the head moves only if nobody moved it meanwhile, so two
  loaders never silently overwrite each other.

A restarted shard, or a second replica, reads its context from here: nobody has to send it
again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from services.megashard.corpus import Document, digest, render
from shared.bus import streamids
from shared.protocol import Names

_MGET_CHUNK = 64

# KEYS: head, new version. ARGV: expected current version ("" = none), new version,
# manifest JSON, then head fields as name/value pairs.
_COMMIT_LUA = """
local current = redis.call('HGET', KEYS[1], 'version')
if (current or '') ~= ARGV[1] then
  return {0, current or ''}
end
if redis.call('SET', KEYS[2], ARGV[3], 'NX') == false then
  return {0, current or ''}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
return {1, ARGV[2]}
"""


class StaleVersion(Exception):
    """The shard's head moved while a new version was being written."""


class MissingContext(Exception):
    """A version's manifest or one of its documents is not in Redis (or is corrupt)."""


@dataclass(frozen=True, slots=True)
class DocRef:
    name: str
    digest: str
    chars: int


@dataclass(frozen=True, slots=True)
class Manifest:
    shard: str
    version: int
    parent: int | None
    vendor: str
    model: str
    specialty: str
    tokens: int
    token_method: str
    window: int
    context_digest: str
    documents: tuple[DocRef, ...]
    created_at: float

    def to_json(self) -> str:
        raw = asdict(self)
        raw["documents"] = [[d.name, d.digest, d.chars] for d in self.documents]
        return json.dumps(raw, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        raw = json.loads(text)
        raw["documents"] = tuple(DocRef(n, d, int(c)) for n, d, c in raw["documents"])
        return cls(**raw)

    def head_fields(self) -> dict[str, str]:
        return {
            "version": str(self.version),
            "vendor": self.vendor,
            "model": self.model,
            "specialty": self.specialty,
            "tokens": str(self.tokens),
            "token_method": self.token_method,
            "window": str(self.window),
            "documents": str(len(self.documents)),
            "context_digest": self.context_digest,
            "updated_at": f"{self.created_at:.3f}",
        }


@dataclass(frozen=True, slots=True)
class Head:
    shard: str
    version: int
    vendor: str
    model: str
    specialty: str
    tokens: int
    window: int
    documents: int
    token_method: str
    updated_at: float


class ContextStore:
    def __init__(self, redis: Redis, names: Names) -> None:
        self._redis = redis
        self._names = names
        self._commit = redis.register_script(_COMMIT_LUA)

    async def head(self, shard: str) -> Head | None:
        raw = await self._redis.hgetall(self._names.shard_head(shard))
        f = {streamids.text(k): streamids.text(v) for k, v in raw.items()}
        if "version" not in f:
            return None
        return Head(
            shard=shard,
            version=int(f["version"]),
            vendor=f.get("vendor", ""),
            model=f.get("model", ""),
            specialty=f.get("specialty", ""),
            tokens=int(f.get("tokens", "0")),
            window=int(f.get("window", "0")),
            documents=int(f.get("documents", "0")),
            token_method=f.get("token_method", ""),
            updated_at=float(f.get("updated_at", "0")),
        )

    async def version(self, shard: str) -> int | None:
        """The current version number only: one cheap HGET, done before every query."""
        raw = await self._redis.hget(self._names.shard_head(shard), "version")
        return int(streamids.text(raw)) if raw is not None else None

    async def shards(self) -> list[str]:
        members = await self._redis.smembers(self._names.shards)
        return sorted(streamids.text(m) for m in members)

    async def manifest(self, shard: str, version: int) -> Manifest:
        raw = await self._redis.get(self._names.shard_version(shard, version))
        if raw is None:
            raise MissingContext(f"shard {shard!r} has no version {version} in Redis")
        return Manifest.from_json(raw)

    async def documents(self, manifest: Manifest) -> list[Document]:
        """The version's documents, checked against their digests."""
        refs = manifest.documents
        texts: list[bytes | str | None] = []
        for i in range(0, len(refs), _MGET_CHUNK):
            chunk = refs[i : i + _MGET_CHUNK]
            texts.extend(await self._redis.mget([self._names.blob(r.digest) for r in chunk]))
        docs = []
        for ref, raw in zip(refs, texts, strict=True):
            if raw is None:
                raise MissingContext(
                    f"shard {manifest.shard!r} v{manifest.version}: document {ref.name!r} "
                    f"(blob {ref.digest[:12]}) is missing from Redis; load the shard again"
                )
            text = streamids.text(raw)
            if digest(text) != ref.digest:
                raise MissingContext(f"document {ref.name!r} does not match its digest")
            docs.append(Document(ref.name, text))
        return docs

    async def context(self, manifest: Manifest) -> str:
        return self.rendered(manifest, await self.documents(manifest))

    def rendered(self, manifest: Manifest, documents: Sequence[Document]) -> str:
        """The context text of the version's `documents`, checked against its digest."""
        text = render(documents)
        if digest(text) != manifest.context_digest:
            raise MissingContext(f"shard {manifest.shard!r} v{manifest.version}: digest mismatch")
        return text

    async def commit(
        self,
        shard: str,
        documents: Sequence[Document],
        *,
        base: int | None,
        vendor: str,
        model: str,
        specialty: str,
        tokens: int,
        token_method: str,
        window: int,
    ) -> Manifest:
        """Write `documents` as version base+1 (1 when `base` is None) and move the head.

        Raises StaleVersion when the head is no longer `base` (someone else loaded).
        """
        manifest = Manifest(
            shard=shard,
            version=(base or 0) + 1,
            parent=base,
            vendor=vendor,
            model=model,
            specialty=specialty,
            tokens=tokens,
            token_method=token_method,
            window=window,
            context_digest=digest(render(documents)),
            documents=tuple(DocRef(d.name, d.digest, len(d.text)) for d in documents),
            created_at=time.time(),
        )
        # Blobs first: a manifest never points at text that is not there.
        async with self._redis.pipeline(transaction=False) as pipe:
            for doc in {d.digest: d for d in documents}.values():
                pipe.set(self._names.blob(doc.digest), doc.text.encode(), nx=True)
            pipe.sadd(self._names.shards, shard)
            await pipe.execute()
        fields = [x for kv in manifest.head_fields().items() for x in kv]
        ok, current = await self._commit(
            keys=[
                self._names.shard_head(shard),
                self._names.shard_version(shard, manifest.version),
            ],
            args=[
                "" if base is None else str(base),
                str(manifest.version),
                manifest.to_json(),
                *fields,
            ],
        )
        if not int(ok):
            now = streamids.text(current)
            raise StaleVersion(
                f"shard {shard!r} moved to version {now or 'none'} while version "
                f"{manifest.version} was being written; load again"
            )
        return manifest
