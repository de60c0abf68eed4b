"""examples/embedding_service.py: the FastAPI sentence-embedding service users copy, run
with its stand-in encoder, many requests at once, through FastAPI's own test client."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import fastbatch  # noqa: E402

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embedding_service.py")


@pytest.fixture(scope="module")
def service():
    spec = importlib.util.spec_from_file_location("embedding_service", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(5)
    words = "the quick brown fox jumps over a lazy dog while batching sentences of many lengths".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(n)]


@contextlib.asynccontextmanager
async def _client(app):
    """An HTTP client of ``app`` in this process, its lifespan (processor start and stop) run."""
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        yield client


def test_many_concurrent_requests_each_get_their_own_embedding(service):
    encoder = service.HashingEncoder()
    app = service.create_app(encoder)
    texts = _texts(96)
    # What each sentence gives alone: padding and batchmates must change nothing.
    alone = [encoder.embed(fastbatch.PaddedBatch(ids[None], np.array([len(ids)]), np.ones((1, len(ids)), bool)))[0]
             for ids in map(encoder.tokenize, texts)]

    async def main():
        async with _client(app) as client:
            singles = await asyncio.gather(*(client.post("/embed", json={"text": t}) for t in texts))
            many = await client.post("/embed_many", json={"texts": texts[:40]})
            stats = (await client.get("/stats")).json()
        return singles, many, stats

    singles, many, stats = asyncio.run(main())
    for i, response in enumerate(singles):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["embedding"], alone[i], rtol=1e-5, atol=1e-6)
    assert many.status_code == 200
    for i, vector in enumerate(many.json()["embeddings"]):
        np.testing.assert_allclose(vector, alone[i], rtol=1e-5, atol=1e-6)
    assert stats["total_processed"] == len(texts) + 40
    assert stats["batch_count"] < stats["total_processed"]  # requests in flight together share batches
    assert app.state.processor.get_stats()["is_running"] is False  # the lifespan stopped it


def test_bad_requests_are_refused_and_the_service_goes_on(service):
    async def main():
        async with _client(service.create_app(service.HashingEncoder())) as client:
            codes = [(await client.post("/embed", json={"text": ""})).status_code,
                     (await client.post("/embed", json={})).status_code,
                     (await client.post("/embed_many", json={"texts": []})).status_code]
            return codes, await client.post("/embed", json={"text": "still serving"})

    codes, ok = asyncio.run(main())
    assert codes == [422, 422, 422]
    assert ok.status_code == 200 and len(ok.json()["embedding"]) == 64


def test_an_overloaded_service_answers_503(service):
    release = threading.Event()
    encoder = service.HashingEncoder()

    calls = []

    class Slow:
        name = "slow"
        tokenize = staticmethod(encoder.tokenize)

        @staticmethod
        def embed(batch):
            calls.append(len(batch))
            if len(calls) > 1:  # the service's warm-up call passes
                assert release.wait(30)
            return encoder.embed(batch)

    config = fastbatch.BatchProcessorConfig(variable_length=True, max_batch_size=2, max_queue_size=2,
                                            batch_timeout=0.0, enable_health_monitoring=False)
    app = service.create_app(Slow(), config)

    async def flood():
        async with _client(app) as client:
            requests = [asyncio.ensure_future(client.post("/embed", json={"text": f"sentence {i}"}))
                        for i in range(12)]
            # Past the queue, a request waits a second for room, then gets 503.
            await asyncio.wait(requests, timeout=20, return_when=asyncio.FIRST_COMPLETED)
            release.set()
            return [r.status_code for r in await asyncio.gather(*requests)]

    codes = asyncio.run(flood())
    # The worker holds one or two, the queue two; one at least waited its second in vain.
    assert codes.count(503) >= 1 and codes.count(200) >= 3 and set(codes) <= {200, 503}
