"""The offline model: OpenAI wire protocol, schema-valid deterministic keyword answers."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import SecretStr

from lib.local.offline.answers import MODEL_NAME, answer
from lib.local.offline.model import (
    OfflineModel,
    RequestError,
    complete,
    create_app,
    start_offline_model,
)
from lib.local.offline.ocr import OcrReader
from lib.routing import MODES, TEMPLATES
from lib.templates.prompts import render
from lib.templates.schemas import OUTPUT_MODELS, JobMatch, JobSummary
from tests.support.llm_samples import JOB, JOB_ZH, PNG, RESUME, data_url, variables
from tests.support.paths import EXAMPLES

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def offline() -> Iterator[OfflineModel]:
    """One offline model server on loopback for the module."""
    handle = start_offline_model()
    yield handle
    handle.stop()


@pytest.fixture
async def client(offline: OfflineModel) -> AsyncIterator[AsyncOpenAI]:
    """The official async client pointed at the offline server."""
    async with AsyncOpenAI(base_url=offline.url, api_key="offline", max_retries=0) as c:
        yield c


def messages(template: str, lang: str, given: dict[str, str] | None = None) -> Any:
    """Rendered messages for a template with sample variables."""
    return render(template, lang, given or variables(template))  # type: ignore[arg-type]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("template", TEMPLATES)
async def test_every_template_answers_valid_json(
    client: AsyncOpenAI, template: str, lang: str
) -> None:
    """JSON mode: each template's answer validates against its schema, deterministically."""
    contents = []
    for _ in range(2):
        response = await client.chat.completions.create(
            model="deepseek-chat",
            messages=messages(template, lang),
            response_format={"type": "json_object"},
        )
        assert response.model == MODEL_NAME
        assert response.choices[0].finish_reason == "stop"
        assert response.usage is not None and response.usage.completion_tokens > 0
        contents.append(response.choices[0].message.content or "")
    assert contents[0] == contents[1]
    OUTPUT_MODELS[template].model_validate_json(contents[0])  # type: ignore[index]
    assert bool(CJK.search(contents[0])) == (lang == "zh")


@pytest.mark.parametrize("template", ["resume_summary", "job_summary", "resume_customize"])
async def test_tool_call_answers(client: AsyncOpenAI, template: str) -> None:
    """Tool calling: the answer is a call of the chosen tool whose arguments validate."""
    schema = OUTPUT_MODELS[template].model_json_schema()  # type: ignore[index]
    tools: Any = [{"type": "function", "function": {"name": "Answer", "parameters": schema}}]
    response = await client.chat.completions.create(
        model="glm-4.5",
        messages=messages(template, "en"),
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "Answer"}},
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "Answer"  # type: ignore[union-attr]
    OUTPUT_MODELS[template].model_validate_json(call.function.arguments)  # type: ignore[index,union-attr]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("template", [t for t in TEMPLATES if MODES[t] == "stream"])
async def test_streaming_chunks_and_usage(client: AsyncOpenAI, template: str, lang: str) -> None:
    """Streaming: several content chunks, then a usage-only chunk; the text validates."""
    stream = await client.chat.completions.create(
        model="deepseek-chat",
        messages=messages(template, lang),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert last.usage.completion_tokens == -(-len(text) // 4)
    OUTPUT_MODELS[template].model_validate_json(text)  # type: ignore[index]


async def test_streaming_without_usage_option(client: AsyncOpenAI) -> None:
    """Without stream_options.include_usage no usage chunk is sent."""
    stream = await client.chat.completions.create(
        model="x", messages=messages("job_match", "en"), stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.choices and c.usage is None for c in chunks)


async def test_streamed_tool_call_arguments_validate(client: AsyncOpenAI) -> None:
    """Streaming with a tool: argument fragments concatenate to a valid answer."""
    tools: Any = [{"type": "function", "function": {"name": "JobSummary", "parameters": {}}}]
    stream = await client.chat.completions.create(
        model="x", messages=messages("job_summary", "zh"), tools=tools, stream=True
    )
    args = ""
    async for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args += call.function.arguments or "" if call.function else ""
    JobSummary.model_validate_json(args)


async def test_langchain_stream_usage(offline: OfflineModel) -> None:
    """LangChain ChatOpenAI(stream_usage=True) streams job_match and captures usage."""
    async with httpx.AsyncClient() as http:
        llm = ChatOpenAI(
            model="deepseek-chat",
            base_url=offline.url,
            api_key=SecretStr("x"),
            stream_usage=True,
            http_async_client=http,
        )
        total: Any = None
        count = 0
        async for chunk in llm.astream(messages("job_match", "zh")):
            total = chunk if total is None else total + chunk
            count += 1
    assert count > 5
    assert total.usage_metadata["output_tokens"] > 0
    assert total.usage_metadata["input_tokens"] > 0
    result = JobMatch.model_validate_json(total.content)
    assert "离线关键词基线" in result.overall_assessment


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
async def test_langchain_structured_methods(offline: OfflineModel, method: str) -> None:
    """LangChain with_structured_output parses the answer with each explicit method."""
    async with httpx.AsyncClient() as http:
        llm = ChatOpenAI(
            model="glm-4.5-flash",
            base_url=offline.url,
            api_key=SecretStr("x"),
            http_async_client=http,
        )
        structured = llm.with_structured_output(JobSummary, method=method)  # type: ignore[arg-type]
        result = await structured.ainvoke(messages("job_summary", "en"))
    assert isinstance(result, JobSummary)
    assert (result.jobTitle, result.company) == ("Backend Engineer", "Globex")


def test_images_without_the_ocr_library_say_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OCR installed: an image task is refused (image_not_supported) naming the extra."""
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    rendered = messages("job_summary", "en", {"job_image": data_url(PNG)})
    with pytest.raises(RequestError) as info:
        complete({"messages": rendered}, OcrReader().read)
    assert info.value.code == "image_not_supported"
    assert "slotline[local]" in info.value.message


async def test_models_endpoint(client: AsyncOpenAI) -> None:
    """GET /v1/models names the baseline."""
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]


async def test_malformed_requests_get_openai_errors() -> None:
    """A non-JSON body or missing messages answer 400 with an error object."""
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://offline") as http:
        bad_json = await http.post("/v1/chat/completions", content=b"{nope")
        no_messages = await http.post("/chat/completions", json={"model": "x"})
    assert bad_json.status_code == no_messages.status_code == 400
    assert bad_json.json()["error"]["code"] == "invalid_json"
    assert no_messages.json()["error"]["type"] == "invalid_request_error"


async def test_no_marker_answers_plain_text() -> None:
    """A prompt without the task marker gets a plain explanation, not an error."""
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://offline") as http:
        response = await http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
    assert "no slotline task marker" in response.json()["choices"][0]["message"]["content"]


async def test_time_to_first_token_and_pace() -> None:
    """ttft_ms delays the first chunk; tokens_per_s paces the rest."""
    transport = httpx.ASGITransport(app=create_app(ttft_ms=150, tokens_per_s=2_000))
    body = {"messages": messages("job_match", "en"), "stream": True}
    async with httpx.AsyncClient(transport=transport, base_url="http://offline") as http:
        start = time.monotonic()
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
        elapsed = time.monotonic() - start
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or "" for line in lines[:-1]
    )
    assert elapsed >= 0.15 + (len(text) / 4) / 2_000 * 0.8
    assert lines[-1] == "data: [DONE]"


def test_match_scores_overlap_with_evidence() -> None:
    """Strengths quote résumé lines, a missing must-have is a weakness, overlap sets the score."""
    result = JobMatch.model_validate(
        answer("job_match", "en", {"resume_text": RESUME, "job_text": JOB})
    )
    # Required: Python, Kubernetes, PostgreSQL (2 of 3 met); preferred: Kafka, GraphQL (1 of 2).
    assert result.match_score == round(100 * (2 + 0.5) / (3 + 1))
    points = {s.point: s.evidence for s in result.strengths}
    assert points["Matches the job's required skill PostgreSQL"] == (
        "Ran PostgreSQL and Redis on AWS with Docker"
    )
    assert [w.point for w in result.weaknesses] == [
        "The job requires Kubernetes; the résumé does not mention it."
    ]
    assert "offline keyword baseline" in result.overall_assessment.lower()


def test_zh_job_summary_keeps_requirements() -> None:
    """A Chinese job post: title, company, must-haves and nice-to-haves from its lines."""
    result = JobSummary.model_validate(answer("job_summary", "zh", {"job_text": JOB_ZH}))
    assert (result.jobTitle, result.company) == ("高级后端工程师", "某某科技有限公司")
    assert result.mustHaves == ["精通 Python，熟悉 Kubernetes"]
    assert result.niceToHaves == ["有大模型经验者优先"]


def test_detailed_summary_copies_every_section() -> None:
    """Copy mode: certifications and unknown sections are kept verbatim."""
    result = answer("detailed_resume_summary", "en", {"detailed_resume_text": RESUME})
    assert result["certifications"] == ["AWS Certified Developer"]
    assert result["extra_sections"] == [{"title": "Awards", "items": ["Hackathon winner 2019"]}]
    assert [e["company"] for e in result["experience"]] == ["Acme Corp", "Beta Ltd"]


def test_customization_adds_no_missing_skill() -> None:
    """The tailored résumé never lists a required skill the résumé lacks."""
    result = answer("resume_customize", "en", {"resume_text": RESUME, "job_text": JOB})
    assert "Kubernetes" not in result["customized_resume_markdown"]
    assert any(
        "Not added: Kubernetes" in c["change_reason"] for c in result["customization_summary"]
    )


def test_resume_header_fields() -> None:
    """The header sorts the contact line into name, email, phone, github; the rest is kept."""
    header = answer("resume_summary", "en", {"resume_text": RESUME})["header"]
    assert header == {
        "name": "Jane Doe",
        "email": "jane@example.com",
        "phone": "+1 555 123 4567",
        "linkedin": None,
        "github": "github.com/jane",
        "headline": "Senior Backend Engineer",
        "other_contacts": None,
    }


@pytest.mark.parametrize(
    ("name", "lang", "title", "company", "location"),
    [
        (
            "job.en.txt",
            "en",
            "Senior Python Backend Engineer, AI Platform",
            "Northwind Labs",
            "Singapore or remote, APAC",
        ),
        ("job.zh.txt", "zh", "高级 Python 后端工程师（AI 平台方向）", "智联未来科技", "上海"),
    ],
)
def test_example_job_posts(name: str, lang: str, title: str, company: str, location: str) -> None:
    """The shipped examples: "Title — Company (Location)" split, headings without colons read."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    result = JobSummary.model_validate(answer("job_summary", lang, {"job_text": text}))
    assert (result.jobTitle, result.company, result.location) == (title, company, location)
    requirements = text.split("\n\n")[3 if lang == "en" else 2]
    assert result.mustHaves == [line[2:] for line in requirements.splitlines()[1:]]
    assert len(result.niceToHaves) == (5 if lang == "en" else 3)
    assert not any(h in result.mustHaves + result.niceToHaves for h in ("Nice to have", "加分项"))
