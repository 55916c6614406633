"""Load test of `domainvlm serve` on loopback: 32 concurrent clients, 2,000 requests.

Starts the real server (uvicorn, token auth on) in a child process with the offline dvlm-tiny
model and a small knowledge base, then sends multipart zero-shot uploads (or text searches) from
concurrent async clients. Prints one JSON line: throughput, p50/p99 latency and the error count,
which must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.retrieval import embed_texts
from domainvlm.retrieval_db import KnowledgeBase
from PIL import Image

TOKEN = "load-test-token"


def prepare(folder: Path) -> str:
    """Weights saved to a file, so the server rebuilds exactly the encoder the KB was built with."""
    torch.manual_seed(0)
    encoder = load_encoder("openclip:dvlm-tiny")
    weights = folder / "dvlm-tiny.pt"
    torch.save(encoder.modules[0].state_dict(), weights)
    encoder = load_encoder(f"openclip:dvlm-tiny:{weights}")
    texts = [f"scene {i}: a satellite image of landmark {i}" for i in range(500)]
    records = [
        {"text": text, "level": "scene" if i % 2 else "object"} for i, text in enumerate(texts)
    ]
    KnowledgeBase.from_vectors(
        embed_texts(encoder, texts).numpy(), records, encoder=encoder.identity()
    ).save(folder / "kb")
    return encoder.name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(base: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with status {server.returncode}")
        try:
            if httpx.get(f"{base}/v1/health", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become healthy in time")


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def load(base: str, endpoint: str, requests: int, concurrency: int) -> tuple[list, int]:
    uploads = [png(seed) for seed in range(16)]
    classes = ",".join(f"class {i}" for i in range(20))
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        base_url=base, limits=limits, headers=headers, timeout=60
    ) as client:

        async def one(number: int) -> httpx.Response:
            if endpoint == "search":
                data = {"kb": "concepts", "text": f"landmark {number % 500}", "k": "5"}
                return await client.post("/v1/search", data=data)
            files = {"image": ("tile.png", uploads[number % len(uploads)], "image/png")}
            return await client.post("/v1/zeroshot", files=files, data={"classes": classes})

        async def worker() -> None:
            nonlocal errors
            for number in counter:
                start = time.perf_counter()
                try:
                    response = await one(number)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--endpoint", choices=("zeroshot", "search"), default="zeroshot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = prepare(folder)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "domainvlm.core.cli", "serve", "--checkpoint", spec]
        command += ["--kb", f"concepts={folder / 'kb'}", "--port", str(port)]
        env = {**os.environ, "DOMAINVLM_TOKEN": TOKEN}
        with open(folder / "server.log", "w") as log:
            server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until_healthy(base, server)
                asyncio.run(load(base, args.endpoint, 32, args.concurrency))  # warm-up
                start = time.perf_counter()
                latencies, errors = asyncio.run(
                    load(base, args.endpoint, args.requests, args.concurrency)
                )
                elapsed = time.perf_counter() - start
            finally:
                server.terminate()
                server.wait(timeout=30)
    latencies_ms = sorted(1000 * t for t in latencies)
    result = {
        "benchmark": "serve_load",
        "endpoint": args.endpoint,
        "model": "dvlm-tiny",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(args.requests / elapsed, 1),
        "p50_ms": round(statistics.median(latencies_ms), 1),
        "p99_ms": round(latencies_ms[int(0.99 * (len(latencies_ms) - 1))], 1),
        "errors": errors,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
