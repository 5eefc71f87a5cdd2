"""ModelInfo: the only reader and writer of videocm.json; every shipped folder loads through it unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from videocm.errors import VideoCMError
from videocm.models.info import INFO_FILE, VERSION, ConsistencyInfo, GuidanceInfo, ModelInfo, migrate

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(p.parent for p in MODELS.glob(f"*/{INFO_FILE}"))


def test_there_are_shipped_folders_to_check():
    assert {p.name for p in SHIPPED} >= {"teacher-flow", "teacher-vp", "lcm-flow", "dcm-flow", "control-vp", "vae"}


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_folder_migrates_and_keeps_its_keys(folder, tmp_path):
    """A shipped file (version 1, or current for retrained ones) reads as the current version, every key it had
    comes back with its value, and what readers used to assume for a missing key is now written out."""
    raw = json.loads((folder / INFO_FILE).read_text())
    assert raw["version"] in (1, VERSION)  # shipped folders are version 1 until retrained, then current
    info = ModelInfo.load(folder)
    written = info.to_dict(subfolder=raw.get("subfolder"))
    assert written["version"] == VERSION
    for key, value in raw.items():
        if key != "version":
            assert written[key] == value, key
    if info.kind in ("teacher", "student"):
        assert info.default_steps == raw.get("default_steps", 50)
        assert info.default_guidance == raw.get("default_guidance", 1.0)
        assert info.text_length == raw.get("text_max_length", 16)
    if info.is_student:
        assert isinstance(info.guidance, GuidanceInfo) and isinstance(info.consistency, ConsistencyInfo)
        assert info.guidance.scale == raw["guidance"]["scale"]
        assert info.is_phased == ("phased" in raw)
    info.save(tmp_path, subfolder=raw.get("subfolder"))
    assert ModelInfo.load(tmp_path) == info  # a round trip of the current version changes nothing


def test_migration_fills_what_version_1_left_implicit():
    old = {"format": "videocm", "version": 1, "kind": "student", "family": "wan", "schedule": {"type": "flow"},
           "consistency": {"grid_points": 20}}
    new = migrate(dict(old))
    assert new["version"] == 2 and new["default_steps"] == 50 and new["default_guidance"] == 1.0
    assert new["guidance"] == {"mode": "fixed", "scale": 1.0} and new["text_max_length"] == 16
    info = ModelInfo.from_dict(old)
    assert info.consistency.grid_points == 20 and info.consistency.skip == 1  # the section's own defaults


def test_unknown_keys_survive_a_round_trip(tmp_path):
    info = ModelInfo.from_dict({"version": 2, "kind": "teacher", "family": "wan", "written_by": "a newer tool"})
    assert info.extra == {"written_by": "a newer tool"}
    info.save(tmp_path)
    assert json.loads((tmp_path / INFO_FILE).read_text())["written_by"] == "a newer tool"


@pytest.mark.parametrize("content, message", [
    ({"format": "videocm", "version": 99, "kind": "teacher"}, "newer videocm"),
    ({"format": "videocm", "version": 0, "kind": "teacher"}, "reads versions 1 to"),
    ({"format": "other", "version": 1, "kind": "teacher"}, "not a videocm model description"),
    ({"format": "videocm", "version": 2, "kind": "painting"}, "names kind 'painting'"),
    ([1, 2], "must hold a JSON object"),
])
def test_bad_descriptions_are_one_line_errors(tmp_path, content, message):
    (tmp_path / INFO_FILE).write_text(json.dumps(content))
    with pytest.raises(VideoCMError, match=message) as error:
        ModelInfo.load(tmp_path)
    assert "\n" not in str(error.value)


def test_missing_folder_file_and_bad_json(tmp_path):
    with pytest.raises(VideoCMError, match="does not exist"):
        ModelInfo.load(tmp_path / "nowhere")
    with pytest.raises(VideoCMError, match="has no videocm.json"):
        ModelInfo.load(tmp_path)
    (tmp_path / INFO_FILE).write_text("{not json")
    with pytest.raises(VideoCMError, match="not valid JSON"):
        ModelInfo.load(tmp_path)
