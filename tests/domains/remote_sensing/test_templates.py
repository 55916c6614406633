from string import Formatter

import pytest
from domainvlm.domains.remote_sensing.knowledge import LANGUAGES, class_names
from domainvlm.domains.remote_sensing.templates import TEMPLATES, templates


def test_every_language_has_three_to_six_distinct_templates() -> None:
    assert tuple(TEMPLATES) == LANGUAGES
    for lang in LANGUAGES:
        prompts = templates(lang)
        assert 3 <= len(prompts) <= 6, lang
        assert len(set(prompts)) == len(prompts), lang


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_template_has_exactly_one_empty_placeholder(lang: str) -> None:
    for template in templates(lang):
        fields = [field for _, field, _, _ in Formatter().parse(template) if field is not None]
        assert fields == [""], template
        assert template.count("{}") == 1


@pytest.mark.parametrize("lang", LANGUAGES)
def test_templates_fill_with_localized_class_names(lang: str) -> None:
    name = class_names("EuroSAT", lang)["SeaLake"]
    for template in templates(lang):
        prompt = template.format(name)
        assert name in prompt and "{" not in prompt
        assert len(prompt) > len(name) + 3


def test_english_has_the_common_rs_templates() -> None:
    english = templates("en")
    assert english[:2] == ["a satellite photo of {}.", "a satellite image of {}."]
    assert "an aerial photo of {}." in english
    assert templates("de")[1].format("Wald") == "Wald auf einem Satellitenbild."


def test_templates_returns_a_copy() -> None:
    templates("en").append("junk {}")
    assert "junk {}" not in templates("en")


def test_unknown_language_lists_the_supported_ones() -> None:
    with pytest.raises(KeyError, match="language 'ja'; supported: en, pt, es, fr, de, nl, it"):
        templates("ja")
