"""The routing table: one source of truth for producer and worker."""

from __future__ import annotations

import pytest

from lib.routing import TEMPLATES, all_pools, route, slot_limit
from lib.settings import Settings


@pytest.mark.parametrize(
    ("template", "tier", "image", "model", "queue", "mode"),
    [
        ("resume_summary", "paid", False, "deepseek-chat", "q_deepseek_chat", "batch"),
        ("resume_summary", "free", False, "glm-4.5-flash", "q_glm_flash", "batch"),
        (
            "detailed_resume_summary",
            "paid",
            False,
            "deepseek-reasoner",
            "q_deepseek_reasoner",
            "batch",
        ),
        ("job_match", "paid", False, "deepseek-chat", "q_deepseek_chat", "stream"),
        ("interview_prep", "free", False, "glm-4.5-flash", "q_glm_flash", "stream"),
        ("job_summary", "paid", True, "glm-4.1v-thinking-flash", "q_glm_vision_paid", "batch"),
        ("job_summary", "free", True, "glm-4.1v-thinking-flash", "q_glm_vision_free", "batch"),
    ],
)
def test_route_table(
    template: str, tier: str, image: bool, model: str, queue: str, mode: str
) -> None:
    """Each template and tier lands on the model, queue and mode of the design."""
    r = route(template, tier, image)  # type: ignore[arg-type]
    assert (r.model_id, r.queue_id, r.mode) == (model, queue, mode)
    assert r.path == f"/api/worker/{tier}/{'vision' if image else 'text'}/{mode}"


def test_paid_text_falls_back_to_glm_and_free_has_no_fallback() -> None:
    """Paid DeepSeek routes fall back to glm-4.5; free and vision routes have none."""
    assert route("job_match", "paid").models == ("deepseek-chat", "glm-4.5")
    assert route("job_match", "free").fallbacks == ()
    assert route("job_summary", "paid", True).fallbacks == ()


def test_slot_limits_come_from_settings() -> None:
    """Every pool's limit is read from settings."""
    s = Settings(deepseek_max_workers=7, glm_max_workers=4, glm_flash_max_workers=1)
    assert slot_limit(s, "deepseek-chat") == 7
    assert slot_limit(s, "glm-4.5") == 4
    assert slot_limit(s, "glm-4.5-flash") == 1
    assert ("glm-4.1v-thinking-flash", "paid") in all_pools()
    assert ("glm-4.1v-thinking-flash", "free") in all_pools()
    assert len(TEMPLATES) == 6
