"""mcp-context settings: env vars and secret files (field names are the variable names)."""

from __future__ import annotations

from pydantic import Field

from mcp_context.cache import BREAKER_RESET_SECONDS, CACHE_TTL_SECONDS, LOCAL_ENTRIES
from sophia_chassis import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "mcp-context"
    embedding_provider: str = "local"  # openai | local
    embedding_model: str = "text-embedding-3-large"
    embedding_cache_ttl_seconds: int = CACHE_TTL_SECONDS
    embedding_cache_local_entries: int = Field(LOCAL_ENTRIES, ge=0)  # recent vectors kept in the process
    openai_api_key: str | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    redis_url: str | None = None
    redis_password: str | None = None
    redis_max_connections: int = 64
    redis_timeout_seconds: float = Field(2.0, gt=0)  # connect and reply, each
    redis_breaker_reset_seconds: float = Field(BREAKER_RESET_SECONDS, gt=0)  # Redis skipped this long once it fails
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_path: str = ":memory:"  # embedded (Qdrant Edge) when no server URL: a directory, or ":memory:"
    qdrant_collection: str = "sophia-memories"
    # A clustered Qdrant (the platform sets these from its replica count): copies of each shard, how many
    # must confirm a write, and shards (one per node spreads the load).
    qdrant_replication_factor: int = Field(1, ge=1, le=10)
    qdrant_write_consistency_factor: int = Field(1, ge=1, le=10)
    qdrant_shard_number: int | None = Field(None, ge=1, le=100)
    max_body_bytes: int = 16 << 20  # a batch of up to 1000 memories
    # The embedded shard's index is rebuilt aside once this many points (or a tenth) are unindexed,
    # checked this often (0: never in the background). A Qdrant server indexes by itself.
    index_min_points: int = Field(1000, ge=1)
    index_check_seconds: float = Field(30.0, ge=0)
    # An embedded shard in a directory is handed over between pods (mcp_context.handoff): the address
    # other pods reach this one at (the pod's IP, from the downward API), and the hand-over's bounds:
    # a starting pod gets the shard within this long or fails its start; an owner takes the shard
    # back if no successor took it this long. The pod's revision (its `pod-template-hash` label):
    # a pod of the owner's revision follows it (a sibling), one of another asks for the shard (a
    # rollout's successor); unset, every starting pod asks.
    pod_ip: str = "127.0.0.1"
    pod_template_hash: str = ""
    shard_acquire_seconds: float = Field(30.0, gt=0)
    shard_take_back_seconds: float = Field(5.0, gt=0)
