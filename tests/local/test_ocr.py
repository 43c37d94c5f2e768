"""Local vision: the offline model reads job screenshots by OCR, end to end on the local stack."""

from __future__ import annotations

import asyncio
import difflib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError

from lib.app.stack import LocalStack, StackInfo, check_health
from lib.local.example_files import screenshot
from lib.local.offline.model import OfflineModel, complete, start_offline_model
from lib.local.offline.ocr import BadImage, OcrReader, image_bytes, lines_of
from lib.templates.prompts import render
from lib.templates.schemas import JobSummary
from tests.support.llm_samples import PNG, data_url
from tests.support.paths import EXAMPLES
from tests.support.stack import local_settings

# OCR is seconds of CPU per image; on a loaded 2-core machine allow for several times that.
pytestmark = pytest.mark.timeout(240)


def _close(got: str, want: str) -> bool:
    """OCR-equal: the same text up to spaces and the odd misread glyph (I/l, o/。)."""
    a, b = ("".join(s.split()) for s in (got, want))
    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.85


def _section(text: str, heading: str) -> list[str]:
    """The bullet lines under `heading` in an example job post, without their bullets."""
    lines = text.splitlines()
    start = lines.index(heading) + 1
    out = []
    for line in lines[start:]:
        if not line.startswith("- "):
            break
        out.append(line[2:])
    return out


CASES = {
    "en": ("job.en.txt", "Senior Python Backend Engineer, AI Platform", "Requirements", 5),
    "zh": ("job.zh.txt", "高级 Python 后端工程师（AI 平台方向）", "任职要求", 3),
}


def check_summary(result: dict[str, Any], lang: str) -> None:
    """The job title and every must-have of the example post, as read from its image."""
    name, title, heading, nice = CASES[lang]
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    summary = JobSummary.model_validate(result)
    assert _close(summary.jobTitle, title), summary.jobTitle
    wanted = _section(text, heading)
    assert len(summary.mustHaves) == len(wanted), summary.mustHaves
    for got, want in zip(summary.mustHaves, wanted, strict=True):
        assert _close(got, want), (got, want)
    assert len(summary.niceToHaves) == nice, summary.niceToHaves
    assert ("OCR" if lang == "en" else "识别") in (summary.summary or "")


@pytest.fixture(scope="module")
def offline() -> Iterator[OfflineModel]:
    """One offline model server on loopback for the module."""
    handle = start_offline_model()
    yield handle
    handle.stop()


@pytest.fixture
async def client(offline: OfflineModel) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=offline.url, api_key="x", max_retries=0, timeout=200) as c:
        yield c


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_offline_model_reads_a_job_screenshot(client: AsyncOpenAI, lang: str) -> None:
    """A screenshot of the example post: the answer has its title and must-haves, by OCR."""
    text = (EXAMPLES / CASES[lang][0]).read_text(encoding="utf-8")
    messages: Any = render("job_summary", lang, {"job_image": screenshot(text)})  # type: ignore[arg-type]
    response = await client.chat.completions.create(
        model="glm-4.1v-thinking-flash",
        messages=messages,
        response_format={"type": "json_object"},
    )
    content = response.choices[0].message.content or ""
    check_summary(JobSummary.model_validate_json(content).model_dump(), lang)
    assert response.usage is not None and response.usage.prompt_tokens > 100


async def test_an_undecodable_image_is_a_400(client: AsyncOpenAI) -> None:
    """A PNG header with no image behind it: 400 invalid_image in OpenAI's error shape."""
    messages: Any = render("job_summary", "en", {"job_image": data_url(PNG)})
    with pytest.raises(BadRequestError) as info:
        await client.chat.completions.create(model="x", messages=messages)
    assert info.value.code == "invalid_image"


def test_job_text_wins_over_the_image() -> None:
    """With job text and an image, the text is the source: the image is not read."""
    messages = render("job_summary", "en", {"job_text": "Go developer", "job_image": data_url(PNG)})
    calls: list[str] = []

    def read(url: str) -> str:
        calls.append(url)
        return ""

    result = complete({"messages": messages}, read)
    assert calls == [] and '"jobTitle": "Go developer"' in result.text


def test_lines_are_ordered_top_to_bottom_then_left_to_right() -> None:
    """Boxes on one line join left to right; a dash read as 一 after a bracket is a dash."""

    def box(x: float, y: float, text: str) -> list[Any]:
        return [[[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]], text, 0.9]

    boxes = [box(300, 52, "right"), box(10, 50, "left"), box(10, 0, "工程师（AI）一智联（上海）")]
    assert lines_of(boxes) == ["工程师（AI） — 智联（上海）", "left right"]


@pytest.mark.parametrize("url", ["https://example.com/x.png", "data:image/png;base64,@@@"])
def test_only_base64_data_urls_are_read(url: str) -> None:
    """Remote URLs and broken base64 are refused before any decoding."""
    with pytest.raises(BadImage):
        image_bytes(url)


def test_ocr_is_imported_by_the_offline_model_server_only() -> None:
    """Producer, worker and the offline model module import no OCR, onnxruntime or OpenCV."""
    code = (
        "import sys, producer.app, worker.app, lib.app.asgi\n"
        "import lib.local.offline.model, lib.local.offline.ocr\n"
        "from lib.local.offline.model import complete\n"
        "from lib.templates.prompts import render\n"
        "complete({'messages': render('job_summary', 'en', {'job_text': 'Go dev'})})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rapidocr_onnxruntime', 'onnxruntime', 'cv2', 'numpy', 'PIL'))\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_reading_cost() -> None:
    """The engine is built once; the same image again is answered from the cache."""
    reader = OcrReader()
    url = screenshot("Backend Engineer\nRequirements\n- Python")
    started = time.perf_counter()
    first = reader.read(url)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    assert reader.read(url) == first
    assert time.perf_counter() - started < cold / 10
    assert first.splitlines()[0] == "Backend Engineer"


# -- end to end on the local stack ----------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """The local stack with nothing configured: every model is the offline model."""
    local = LocalStack(
        local_settings(),
        state_dir=tmp_path_factory.mktemp("ocr-stack"),
        time_scale=0.01,
        persist=False,
    )
    info = local.start()
    try:
        check_health(info)
        yield info
    finally:
        local.stop()


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_vision_job_summary_runs_offline_through_ocr(stack: StackInfo, lang: str) -> None:
    """A screenshot job_summary on the local stack: vision route, done, not degraded, read."""
    text = (EXAMPLES / CASES[lang][0]).read_text(encoding="utf-8")
    body = {"template": "job_summary", "variables": {"job_image": screenshot(text)}, "lang": lang}
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as http:
        task = (await http.post("/api/tasks", json=body)).json()
        assert task["queue_id"] == "q_glm_vision_free", task
        assert task["model_id"] == "glm-4.1v-thinking-flash"
        deadline = time.monotonic() + 200
        while True:
            status = (await http.get(task["status_url"])).json()
            if status["status"] not in ("queued", "running") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert (status["status"], status["degraded"]) == ("done", False), status
    assert "degraded" not in status["result"]
    check_summary(status["result"], lang)
    assert status["usage"]["model"] == "glm-4.1v-thinking-flash (offline keyword baseline)"
