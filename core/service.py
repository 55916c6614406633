"""HTTP service: zero-shot classification, knowledge-base search and (for a VQA checkpoint)
question answering over one model.

Safety first, because the service reads untrusted uploads: the body size is capped while it is
being received (a lying or missing Content-Length does not help), pixels are capped before
decoding, class lists and texts are capped, and every bad request gets a 4xx JSON error without
touching the process. Inference runs in worker threads, one model call at a time, so health checks
answer on the event loop while a slow request computes.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime, and
# they refer to the limits of the app being created.
import hmac
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

from domainvlm.core.encoder import Encoder
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.images import ImageReadError, ImageTooLargeError, pixel_limit
from domainvlm.core.retrieval import (
    KnowledgeBaseSearch,
    check_filters,
    hit_to_dict,
    parse_filters,
)
from domainvlm.core.service_docs import add_offline_docs
from domainvlm.core.service_openapi import (
    COMMON_ERRORS,
    OPEN_PATHS,
    OPEN_PREFIXES,
    UPLOAD_ERRORS,
    add_openapi,
    error_response,
)
from domainvlm.core.zeroshot import ZeroShotClassifier, templates_for
from domainvlm.retrieval_db import FilterError, KnowledgeBase, KnowledgeBaseError
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from torch import Tensor

log = logging.getLogger(__name__)

FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")
"""What the POST endpoints read; url-encoded forms serve the requests that send no file."""
SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")
T = TypeVar("T")
Answerer = Callable[[list[str], list[str], int, int | None], list[dict]]
"""``answer(paths, questions, top_k, frame)``: ``core.vqa.ask_questions`` bound to a system."""


@dataclass(frozen=True)
class ServiceLimits:
    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    max_classes: int = 1000
    max_class_chars: int = 200
    max_templates: int = 50
    max_text_chars: int = 2000
    max_k: int = 100
    max_filters: int = 64


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit:,} bytes")


class RequestGuard:
    """Pure ASGI middleware: bearer token (401), multipart only (415) and a body cap counted as
    bytes arrive (413).

    With a token, ``OPEN_PATHS`` still answer without it (``request.state.authorized`` then is
    False, and health says only that the server is up)."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        authorized = self.token is None or self._authorized(headers.get(b"authorization", b""))
        scope.setdefault("state", {})["authorized"] = authorized
        path = scope.get("path", "")
        if not authorized and not (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)):
            await _send_error(
                send, 401, "missing or wrong bearer token", {"www-authenticate": "Bearer"}
            )
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["method"] == "POST" and content_type not in FORM_TYPES:
            await _send_error(send, 415, _multipart_only(path, content_type.decode("latin-1")))
            return
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            await _send_error(send, 400, "Content-Length is not a number")
            return
        if int(declared) > self.max_body:
            await _send_error(send, 413, BodyTooLarge(self.max_body).detail)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise BodyTooLarge(self.max_body)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _send_error(send, 413, exc.detail)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, credentials = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)


CURL_EXAMPLES = {
    "/v1/zeroshot": "-F image=@tile.png -F classes=forest,river",
    "/v1/search": "-F kb=NAME -F text='a harbour'",
    "/v1/vqa": "-F image=@scan.dcm -F question='is there a fracture?'",
}


def _multipart_only(path: str, content_type: str) -> str:
    sent = f"Content-Type {content_type}" if content_type else "no Content-Type"
    example = CURL_EXAMPLES.get(path, "-F image=@file.png")
    return (
        f"POST {path} takes multipart/form-data (an image as a file field, the rest as form "
        f"fields), but got {sent}; e.g. curl {example} URL (see /docs)"
    )


async def _send_error(send: Send, status: int, message: str, headers: dict | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    encoder: Encoder,
    knowledge_bases: Mapping[str, KnowledgeBase] | None = None,
    token: str | None = None,
    limits: ServiceLimits = ServiceLimits(),
    allow_encoder_mismatch: bool = False,
    answerer: Answerer | None = None,
) -> FastAPI:
    """The app; a knowledge base built with another encoder is refused here, at startup.
    ``POST /v1/vqa`` exists when ``answerer`` is given (a checkpoint whose domain answers).

    ``GET /v1/health`` names the encoder by its identity hash only: its ``name`` holds server
    paths (a checkpoint's absolute path), which are nobody's business but the operator's.
    """
    identity = encoder.identity()
    searchers = {
        name: KnowledgeBaseSearch(encoder, kb, allow_encoder_mismatch, identity)
        for name, kb in (knowledge_bases or {}).items()
    }
    classifier = ZeroShotClassifier(encoder)
    model_lock = threading.Lock()
    app = FastAPI(
        title="domainvlm",
        summary="Zero-shot classification and knowledge-base search",
        version="1",
        docs_url=None,  # served offline by add_offline_docs
        redoc_url=None,
    )
    add_offline_docs(app)
    add_openapi(app, token_required=token is not None)
    app.add_middleware(RequestGuard, token=token, max_body=limits.max_upload_bytes)
    _add_error_handlers(app)

    @app.get("/v1/health", responses={500: COMMON_ERRORS[500]})
    async def health(request: Request) -> dict:
        """Is the server up? Open to load balancers without the token: without it the answer is
        only ``{"status": "ok"}``; with it (or on a server without one) also the encoder's
        identity hash and the served knowledge bases (never a server path)."""
        if not request.state.authorized:
            return {"status": "ok"}
        return {
            "status": "ok",
            "encoder": {"sha256": identity["sha256"]},
            "knowledge_bases": sorted(searchers),
        }

    @app.post("/v1/zeroshot", responses=UPLOAD_ERRORS)
    def zeroshot(
        image: Annotated[UploadFile, File(description="the image to classify")],
        classes: Annotated[str, Form(description='"a,b,c" or a JSON list of class names')],
        templates: Annotated[str | None, Form(description="JSON list of templates")] = None,
        lang: Annotated[str, Form(description="language of the built-in templates")] = "en",
        top_k: Annotated[int, Form(ge=1, le=limits.max_classes)] = 5,
    ) -> dict:
        """Zero-shot classification of one image among the given classes: the best label, the
        top-k and every class's probability (templates filled with each class name, averaged;
        logits = 100 x cosine, softmax)."""
        classnames = _parse_classes(classes, limits)
        prompts = _parse_templates(templates, limits) if templates else templates_for(lang)
        tensor = _load_upload(encoder, image, limits)
        with model_lock:
            prediction = classifier.predict(tensor[None], classnames, prompts, top_k=top_k)[0]
        return {**prediction.to_dict(), "probabilities": prediction.probabilities}

    @app.post(
        "/v1/search",
        responses=UPLOAD_ERRORS | {404: error_response("no knowledge base of that name")},
    )
    def search(
        kb: Annotated[str, Form(description="name of a served knowledge base")],
        text: Annotated[str | None, Form(description="text query")] = None,
        image: Annotated[UploadFile | None, File(description="image query")] = None,
        k: Annotated[int, Form(ge=1, le=limits.max_k)] = 5,
        filters: Annotated[
            list[str] | None, Form(alias="filter", description="key=value metadata filters")
        ] = None,
    ) -> dict:
        """The k best items of a served knowledge base for a text or an image query, optionally
        filtered by exact metadata matches (key=value; a field no item has is a 422)."""
        if kb not in searchers:
            served = ", ".join(sorted(searchers)) or "none"
            raise HTTPException(404, f"unknown knowledge base {kb!r}; served: {served}")
        if (text is None) == (image is None):
            raise HTTPException(422, "give exactly one of 'text' and 'image'")
        if text is not None and not 0 < len(text) <= limits.max_text_chars:
            raise HTTPException(422, f"'text' must hold 1 to {limits.max_text_chars} characters")
        if filters and len(filters) > limits.max_filters:
            raise HTTPException(422, f"at most {limits.max_filters} filters, got {len(filters)}")
        where = parse_filters(filters or [])
        if where:
            check_filters(where, searchers[kb].knowledge_base)
        tensor = _load_upload(encoder, image, limits) if image is not None else None
        with model_lock:
            if tensor is None:
                hits = searchers[kb].search_text(text, k, where)
            else:
                hits = searchers[kb].search_image(tensor, k, where)
        return {"kb": kb, "results": [hit_to_dict(hit, rank) for rank, hit in enumerate(hits, 1)]}

    if answerer is not None:

        @app.post("/v1/vqa", responses=UPLOAD_ERRORS)
        def vqa(
            image: Annotated[UploadFile, File(description="the image the question is about")],
            question: Annotated[str, Form(description="the question, in the training language")],
            top_k: Annotated[int, Form(ge=1, le=limits.max_k)] = 5,
            frame: Annotated[
                int | None, Form(ge=0, description="0-based frame of a multi-frame DICOM")
            ] = None,
        ) -> dict:
            """The answer to a question about one image, with its probability (a softmax over
            the checkpoint's answer vocabulary) and the top-k answers."""
            if not 0 < len(question) <= limits.max_text_chars:
                raise HTTPException(
                    422, f"'question' must hold 1 to {limits.max_text_chars} characters"
                )

            def answer(path: str) -> dict:
                with model_lock:
                    return answerer([path], [question], top_k, frame)[0]

            return {"question": question, **_with_upload(image, limits, answer, only_reads=True)}

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(part) for part in error["loc"]), "problem": error["msg"]}
            for error in exc.errors()
        ]
        return JSONResponse({"error": "malformed request", "details": details}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.exception_handler(DomainVLMError)
    @app.exception_handler(KnowledgeBaseError)
    async def user_error(request: Request, exc: Exception) -> JSONResponse:
        status = 400
        if isinstance(exc, ImageTooLargeError):
            status = 413
        elif isinstance(exc, FilterError):  # a malformed form field, like FastAPI's own 422s
            status = 422
        return JSONResponse({"error": str(exc)}, status_code=status)


def _parse_classes(text: str, limits: ServiceLimits) -> list[str]:
    if text.lstrip().startswith("["):
        try:
            classes = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HTTPException(422, f"'classes' is not a valid JSON list: {exc}") from exc
    else:
        classes = [name.strip() for name in text.split(",") if name.strip()]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise HTTPException(422, "'classes' must be a non-empty list of class names")
    if len(classes) > limits.max_classes:
        raise HTTPException(422, f"at most {limits.max_classes} classes, got {len(classes)}")
    if any(not name or len(name) > limits.max_class_chars for name in classes):
        raise HTTPException(422, f"class names must hold 1 to {limits.max_class_chars} characters")
    return classes


def _parse_templates(text: str, limits: ServiceLimits) -> list[str]:
    try:
        templates = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"'templates' is not a valid JSON list: {exc}") from exc
    if not (
        isinstance(templates, list) and templates and all(isinstance(t, str) for t in templates)
    ):
        raise HTTPException(422, "'templates' must be a non-empty JSON list of strings")
    if len(templates) > limits.max_templates:
        raise HTTPException(422, f"at most {limits.max_templates} templates, got {len(templates)}")
    return templates


def _load_upload(encoder: Encoder, upload: UploadFile, limits: ServiceLimits) -> Tensor:
    """Decode through the encoder's own loader, under the pixel cap."""
    return _with_upload(upload, limits, encoder.load_image)


def _with_upload(
    upload: UploadFile, limits: ServiceLimits, use: Callable[[str], T], only_reads: bool = False
) -> T:
    """``use(path)`` on a private temp copy of the upload, under the pixel cap.

    The temp file keeps only a sanitised suffix of the client's name: it picks the reader
    (GeoTIFF, DICOM, ...) and nothing the client sends ever becomes a server path. Any failure
    of ``use`` means a bad upload (the encoder's loader may be any domain's), or with
    ``only_reads`` only an ``ImageReadError`` does (``use`` also runs a model).
    """
    name = upload.filename or "upload"
    suffix = Path(name).suffix.lower()
    with tempfile.NamedTemporaryFile(suffix=suffix if SAFE_SUFFIX.match(suffix) else "") as tmp:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, tmp)
        tmp.flush()
        try:
            with pixel_limit(limits.max_pixels):
                return use(tmp.name)
        except ImageTooLargeError as exc:
            message = str(exc).replace(repr(tmp.name), repr(name)).replace(tmp.name, name)
            raise HTTPException(413, message) from exc
        except Exception as exc:
            if only_reads and not isinstance(exc, ImageReadError):
                raise
            reason = str(exc).replace(repr(tmp.name), repr(name)).replace(tmp.name, name)
            log.info("rejected upload %r: %s", name, reason)
            raise HTTPException(
                400, f"uploaded file {name!r} is not a readable image: {reason}"
            ) from exc
