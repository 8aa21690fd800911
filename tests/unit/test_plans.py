"""A job's cuts planned once (`serve_app/jobqueue/plans.py`): what every reader takes from the plan."""

from __future__ import annotations

import pytest

from catalog.data import load_catalog
from serve_app.jobqueue.plans import CutNotInCatalog, DraftJob, PromptWords, plan_cuts
from serve_app.jobqueue.render_cache import RenderSettings

RENDER = RenderSettings('{"profile": "tiny-random"}', 64, 1, "canny", "SASTRE")
WORDS = PromptWords("worsted wool", "navy blue")
DIGEST = "5e" * 32


def _job(**changes) -> DraftJob:
    fields = {"job_id": "3f2c9a4e-job-id", "family_id": "lana-fria", "color_id": "lana-fria-azul-marino",
              "cuts": ("recto", "cruzado"), "seed": 40, "result_token": "b7e1token", "swatch_digest": DIGEST}
    return DraftJob(**{**fields, **changes})


def test_each_cut_gets_the_job_s_seed_plus_its_place():
    assert [(plan.cut, plan.seed) for plan in plan_cuts(_job())] == [("recto", 40), ("cruzado", 41)]
    assert [plan.seed for plan in plan_cuts(_job(seed=None))] == [None, None]  # a row the original backend wrote


def test_a_result_key_carries_the_job_s_token_never_its_id():
    [recto, cruzado] = plan_cuts(_job())
    assert recto.result_key == "generated/lana-fria/lana-fria-azul-marino/b7e1token/recto.jpg"
    assert cruzado.result_key.endswith("/b7e1token/cruzado.jpg")
    assert all("3f2c9a4e-job-id" not in plan.result_key for plan in (recto, cruzado))


def test_a_job_with_its_own_swatch_previews_it_by_job_a_catalog_color_by_color():
    assert plan_cuts(_job(swatch_url="http://x/media/temp-uploads/u.png"))[0].preview_url == \
        "/preview?job_id=3f2c9a4e-job-id&cut=recto"
    assert plan_cuts(_job())[1].preview_url == "/preview?color_id=lana-fria-azul-marino&cut=cruzado"


def test_the_prewarm_plan_and_a_shop_s_job_with_the_same_inputs_share_a_cache_key():
    """Prewarm plans a draft one-cut job; a shop's later job differs in id and token only: same key."""
    catalog = load_catalog()
    prewarmed = plan_cuts(_job(cuts=("cruzado",)), catalog, WORDS, RENDER)[0]
    shop = plan_cuts(_job(job_id="another", result_token="other", cuts=("cruzado",)), catalog, WORDS, RENDER)[0]
    assert prewarmed.cache_key == shop.cache_key and prewarmed.cache_key is not None
    assert prewarmed.prompt.startswith("navy blue worsted wool ")
    assert prewarmed.template_digest == catalog.cut("cruzado").template_digest
    for other in (plan_cuts(_job(cuts=("cruzado",), seed=41), catalog, WORDS, RENDER)[0],
                  plan_cuts(_job(cuts=("cruzado",), swatch_digest="00" * 32), catalog, WORDS, RENDER)[0],
                  plan_cuts(_job(cuts=("cruzado",)), catalog, PromptWords("tweed", "navy blue"), RENDER)[0]):
        assert other.cache_key != prewarmed.cache_key
    # The second cut of a two-cut job has seed 41: not the prewarmed one-cut view at 40.
    assert plan_cuts(_job(), catalog, WORDS, RENDER)[1].cache_key != prewarmed.cache_key


def test_a_plan_has_no_cache_key_without_a_swatch_digest_or_render_settings_and_no_prompt_without_words():
    catalog = load_catalog()
    assert plan_cuts(_job(swatch_digest=None), catalog, WORDS, RENDER)[0].cache_key is None
    assert plan_cuts(_job(swatch_digest=None), catalog, WORDS, RENDER, swatch_digest=DIGEST)[0].cache_key == \
        plan_cuts(_job(), catalog, WORDS, RENDER)[0].cache_key  # the runner's digest of a catalog swatch
    assert plan_cuts(_job(), catalog, WORDS)[0].cache_key is None  # the cache is off
    public = plan_cuts(_job())[0]
    assert (public.prompt, public.template_digest, public.cache_key) == (None, None, None)


def test_a_cut_that_left_the_catalog_cannot_be_planned_for_rendering():
    with pytest.raises(CutNotInCatalog, match="chaqueta-mao"):
        plan_cuts(_job(cuts=("recto", "chaqueta-mao")), load_catalog(), WORDS, RENDER)
    assert [plan.cut for plan in plan_cuts(_job(cuts=("recto", "chaqueta-mao")))] == ["recto", "chaqueta-mao"]
