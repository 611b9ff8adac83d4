import pytest

from hf_ft.task.subjects import CATEGORIES, UnknownSubjectError, category_of, registry, resolve_subjects


def test_registry_has_66_official_subjects_plus_hidden_linear_algebra():
    table = registry()
    assert len(resolve_subjects("all")) == 66
    assert "linear_algebra" in table and not table["linear_algebra"].official
    assert "linear_algebra" not in resolve_subjects("all")
    assert resolve_subjects("linear_algebra") == ["linear_algebra"]
    assert {s.category for s in table.values()} == set(CATEGORIES)
    assert table["geography_of_taiwan"].name_zh == "台灣地理"


def test_categories_subjects_and_mixes():
    stem = resolve_subjects("STEM")
    assert "physics" in stem and "linear_algebra" not in stem
    assert all(category_of(s) == "STEM" for s in stem)
    mixed = resolve_subjects("humanities, music ,physics")
    assert "music" in mixed and "physics" in mixed and "taxation" in mixed
    assert mixed == sorted(set(mixed))
    assert len(resolve_subjects("stem,humanities,social_sciences,other")) == 66


def test_unknown_subject_lists_close_matches():
    with pytest.raises(UnknownSubjectError, match="unknown subject or category 'phisics'.*physics"):
        resolve_subjects("phisics")
    with pytest.raises(UnknownSubjectError, match="socail_sciences.*social_sciences"):
        resolve_subjects("all,socail_sciences")
