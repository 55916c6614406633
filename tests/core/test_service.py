from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
import torch
from domainvlm.core.retrieval import embed_texts
from domainvlm.core.service import ServiceLimits, create_app
from domainvlm.retrieval_db import EncoderMismatchError, KnowledgeBase
from fastapi.testclient import TestClient
from PIL import Image

from tests.helpers import colour_png
from tests.plugins.colours import ColourSystem

RED, BLUE = (230, 20, 10), (15, 30, 220)


def png_bytes(tmp_path: Path, rgb=RED, size: int = 8) -> bytes:
    return colour_png(tmp_path / f"upload_{size}.png", rgb, size=size).read_bytes()


def knowledge_base(encoder) -> KnowledgeBase:
    texts = ["red roof", "green forest", "blue lake", "red car"]
    levels = ["object", "scene", "scene", "object"]
    records = [{"text": text, "level": level} for text, level in zip(texts, levels)]
    vectors = embed_texts(encoder, texts).numpy()
    return KnowledgeBase.from_vectors(vectors, records, encoder=encoder.identity())


@pytest.fixture
def encoder():
    return ColourSystem().encoder()


@pytest.fixture
def client(encoder) -> TestClient:
    app = create_app(encoder, {"concepts": knowledge_base(encoder)})
    return TestClient(app, raise_server_exceptions=False)


def classify(client: TestClient, image: bytes, classes: str = "red,green,blue", **form):
    files = {"image": ("tile.png", image, "image/png")}
    return client.post("/v1/zeroshot", files=files, data={"classes": classes, **form})


def test_health_and_openapi(client: TestClient, encoder):
    response = client.get("/v1/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "encoder": {"sha256": encoder.identity()["sha256"]},
        "knowledge_bases": ["concepts"],
    }
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/zeroshot", "/v1/search", "/v1/health"} <= set(paths)


def test_zeroshot_endpoint_classifies_an_upload(client: TestClient, tmp_path: Path):
    response = classify(client, png_bytes(tmp_path, BLUE), top_k="2")
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == "blue" and [t["label"] for t in body["top_k"]][0] == "blue"
    assert len(body["top_k"]) == 2
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    response = classify(
        client, png_bytes(tmp_path), classes='["red", "blue"]', templates='["a {} tile"]'
    )
    assert response.status_code == 200 and response.json()["label"] == "red"


def test_token_is_required_except_for_health_and_the_api_description(encoder, tmp_path: Path):
    client = TestClient(create_app(encoder, token="s3cret"))
    for response in (
        classify(client, png_bytes(tmp_path)),
        client.post("/v1/search", data={"kb": "x", "text": "red"}),
        client.post("/v1/search", data={"kb": "x"}, headers={"Authorization": "Bearer wrong"}),
        client.post("/v1/search", data={"kb": "x"}, headers={"Authorization": "s3cret"}),
    ):
        assert response.status_code == 401
        assert response.json() == {"error": "missing or wrong bearer token"}
        assert response.headers["www-authenticate"] == "Bearer"
    # Open for load balancers and browsers: health says only that the server is up.
    assert client.get("/v1/health").json() == {"status": "ok"}
    assert client.get("/v1/health", headers={"Authorization": "Bearer no"}).json() == {
        "status": "ok"
    }
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    good = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/health", headers=good).json()["encoder"] == {
        "sha256": encoder.identity()["sha256"]
    }
    files = {"image": ("t.png", png_bytes(tmp_path), "image/png")}
    response = client.post("/v1/zeroshot", files=files, data={"classes": "red,blue"}, headers=good)
    assert response.status_code == 200


def test_corrupt_image_is_a_400_and_the_service_lives_on(client: TestClient):
    response = classify(client, b"\x89PNG\r\n\x1a\n definitely broken")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "tile.png" in error and "/tmp" not in error
    assert client.get("/v1/health").status_code == 200


def test_oversize_uploads_are_refused_with_or_without_content_length(encoder, tmp_path: Path):
    client = TestClient(create_app(encoder, limits=ServiceLimits(max_upload_bytes=2_000)))
    big = png_bytes(tmp_path, size=64)
    assert len(big) > 2_000
    response = classify(client, big)
    assert response.status_code == 413 and "2,000 bytes" in response.json()["error"]

    boundary = "dvlm-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="classes"\r\n\r\nred,blue\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks():
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = client.post(
        "/v1/zeroshot",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert client.get("/v1/health").status_code == 200
    small = classify(client, png_bytes(tmp_path))
    assert small.status_code == 200


def test_pixel_and_class_caps(encoder, tmp_path: Path):
    limits = ServiceLimits(max_pixels=100, max_classes=3, max_class_chars=10)
    client = TestClient(create_app(encoder, limits=limits))
    response = classify(client, png_bytes(tmp_path, size=16))
    assert response.status_code == 413 and "256 pixels" in response.json()["error"]
    assert classify(client, png_bytes(tmp_path, size=8)).status_code == 200
    response = classify(client, png_bytes(tmp_path), classes="a,b,c,d")
    assert response.status_code == 422 and "at most 3 classes" in response.json()["error"]
    response = classify(client, png_bytes(tmp_path), classes="red," + "y" * 11)
    assert response.status_code == 422 and "1 to 10 characters" in response.json()["error"]


def test_malformed_requests_get_json_errors(client: TestClient, tmp_path: Path):
    response = client.post("/v1/zeroshot", files={"image": ("t.png", png_bytes(tmp_path))})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "malformed request" and body["details"][0]["field"].endswith("classes")
    assert classify(client, png_bytes(tmp_path), classes="[1, 2]").status_code == 422
    assert classify(client, png_bytes(tmp_path), templates="not json").status_code == 422
    response = classify(client, png_bytes(tmp_path), templates='["no placeholder"]')
    assert response.status_code == 400 and "placeholder" in response.json()["error"]
    assert classify(client, png_bytes(tmp_path), classes="red,red").status_code == 400


def test_search_by_text_or_image_with_filters(client: TestClient, tmp_path: Path):
    response = client.post("/v1/search", data={"kb": "concepts", "text": "red", "k": "2"})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["rank"] for r in results] == [1, 2]
    assert {r["record"]["text"] for r in results} == {"red roof", "red car"}

    files = {"image": ("q.png", png_bytes(tmp_path, BLUE), "image/png")}
    response = client.post("/v1/search", data={"kb": "concepts", "k": "1"}, files=files)
    assert response.status_code == 200
    assert response.json()["results"][0]["record"]["text"] == "blue lake"

    data = {"kb": "concepts", "text": "red", "filter": ["level=scene"], "k": "4"}
    results = client.post("/v1/search", data=data).json()["results"]
    assert results and all(r["record"]["level"] == "scene" for r in results)


def test_search_errors(client: TestClient, encoder, tmp_path: Path):
    response = client.post("/v1/search", data={"kb": "nope", "text": "red"})
    assert response.status_code == 404 and "concepts" in response.json()["error"]
    without_kbs = TestClient(create_app(encoder))
    response = without_kbs.post("/v1/search", data={"kb": "concepts", "text": "red"})
    assert response.status_code == 404 and "served: none" in response.json()["error"]
    assert client.post("/v1/search", data={"kb": "concepts"}).status_code == 422
    files = {"image": ("q.png", png_bytes(tmp_path), "image/png")}
    both = client.post("/v1/search", data={"kb": "concepts", "text": "red"}, files=files)
    assert both.status_code == 422
    bad_filter = client.post(
        "/v1/search", data={"kb": "concepts", "text": "red", "filter": ["oops"]}
    )
    assert bad_filter.status_code == 422 and "key=value" in bad_filter.json()["error"]
    quoted = client.post(
        "/v1/search", data={"kb": "concepts", "text": "red", "filter": ['le"vel=scene']}
    )
    assert quoted.status_code == 422 and "without quotes" in quoted.json()["error"]
    too_many = client.post("/v1/search", data={"kb": "concepts", "text": "red", "k": "1000"})
    assert too_many.status_code == 422


def test_long_filter_lists_are_capped_with_a_json_422(client: TestClient):
    """SQLite refuses expressions deeper than 1000: 998 filters (Starlette caps a form at 1000
    fields) once answered 500."""
    many = [f"level=value{i}" for i in range(998)]
    response = client.post("/v1/search", data={"kb": "concepts", "text": "red", "filter": many})
    assert response.status_code == 422
    assert response.json() == {"error": "at most 64 filters, got 998"}
    at_limit = [f"level=value{i}" for i in range(63)] + ["level=scene"]
    response = client.post(
        "/v1/search", data={"kb": "concepts", "text": "red", "filter": at_limit, "k": "4"}
    )
    assert response.status_code == 200
    texts = {r["record"]["text"] for r in response.json()["results"]}
    assert texts == {"green forest", "blue lake"}
    fields = [f"field{i}=1" for i in range(64)]  # 64 distinct fields: one SQL clause each
    response = client.post("/v1/search", data={"kb": "concepts", "text": "red", "filter": fields})
    # The query runs (no 500), and fields no record has are named rather than matching nothing.
    assert response.status_code == 422
    assert response.json()["error"].startswith("no record has a field 'field0'")


def test_a_knowledge_base_of_another_encoder_is_refused_at_startup(encoder):
    other = ColourSystem()
    with torch.no_grad():
        other.mix.weight.mul_(2)
    with pytest.raises(EncoderMismatchError):
        create_app(other.encoder(), {"concepts": knowledge_base(encoder)})


def test_internal_errors_are_json_500s(encoder, tmp_path: Path):
    def broken(images):
        raise RuntimeError("boom")

    encoder.image_fn = broken
    client = TestClient(create_app(encoder), raise_server_exceptions=False)
    response = classify(client, png_bytes(tmp_path))
    assert response.status_code == 500 and response.json() == {
        "error": "internal error: RuntimeError"
    }
    assert client.get("/v1/health").status_code == 200


def test_slow_inference_does_not_block_health(encoder, tmp_path: Path):
    started, release = threading.Event(), threading.Event()
    image_fn = encoder.image_fn

    def slow(images):
        started.set()
        release.wait(20)
        return image_fn(images)

    encoder.image_fn = slow
    image = png_bytes(tmp_path)
    responses = []
    with TestClient(create_app(encoder)) as client:
        worker = threading.Thread(target=lambda: responses.append(classify(client, image)))
        worker.start()
        try:
            assert started.wait(20)
            health = client.get("/v1/health")
            assert health.status_code == 200 and not release.is_set()
        finally:
            release.set()
            worker.join(20)
    assert responses[0].status_code == 200 and responses[0].json()["label"] == "red"


def test_upload_suffix_picks_the_reader_but_never_a_path(client: TestClient, tmp_path: Path):
    image = io.BytesIO()
    Image.new("RGB", (8, 8), BLUE).save(image, format="JPEG")
    files = {"image": ("../../etc/scene.JPG", image.getvalue(), "image/jpeg")}
    response = client.post("/v1/zeroshot", files=files, data={"classes": "red,blue"})
    assert response.status_code == 200 and response.json()["label"] == "blue"
