"""The card's licence and the recorded paths: claims come from what was read, never from a default."""

from hf_ft.core.provenance import card_licence, card_license, public_name, relative_paths, resolve_recorded


def test_licence_is_the_base_models_unless_the_data_restricts_it():
    base = {"license": "apache-2.0", "license_source": "google-bert/bert-base-chinese's card"}
    assert card_licence(base, {"ikala/tmmluplus": "mit"})[0] == "apache-2.0"
    licence, note = card_licence(base, {"ceval/ceval-exam": "cc-by-nc-sa-4.0"})
    assert licence == "other" and "non-commercial use only" in note and "cc-by-nc-sa-4.0" in note
    licence, note = card_licence({"license": None, "license_source": "the model folder has no README.md"}, {})
    assert licence == "other" and note.startswith("The licence is unknown: the model folder has no README.md")


def test_card_license_reads_the_front_matter(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: GPL-3.0\nlanguage: zh\n---\n# model\n", encoding="utf-8")
    assert card_license(tmp_path / "README.md") == "gpl-3.0"
    (tmp_path / "plain.md").write_text("# no front matter\n", encoding="utf-8")
    assert card_license(tmp_path / "plain.md") is None and card_license(tmp_path / "missing.md") is None


def test_recorded_paths_are_relative_and_resolve_back(tmp_path):
    out, data = tmp_path / "runs" / "out", tmp_path / "data"
    out.mkdir(parents=True)
    data.mkdir()
    given = {"data_dir": str(data), "model_name_or_path": "bert-base-chinese", "output_dir": str(out),
             "learning_rate": 3e-5}
    recorded, rewritten = relative_paths(given, {"data_dir", "model_name_or_path", "output_dir"}, out)
    assert recorded == {"data_dir": "../../data", "model_name_or_path": "bert-base-chinese", "learning_rate": 3e-5}
    assert rewritten == ["data_dir"]
    assert resolve_recorded(recorded, rewritten, out)["data_dir"] == str(data.resolve())
    assert public_name(str(data)) == "data" and public_name("google-bert/bert-base-chinese") == \
        "google-bert/bert-base-chinese"
