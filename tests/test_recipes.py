"""Recipes: every value is a setting of its method with a source; the teacher folder picks one (by its layout,
never for a small network); distill prints it with each source, the YAML file and flags override it; the
MovingDigits recipe is the built-in defaults, so the shipped figures do not move."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from videocm.cli import main, parse_command
from videocm.config import config_from_dict, settings
from videocm.distill.dcm import DCMConfig
from videocm.distill.dmd import DMDConfig
from videocm.distill.lcm import LCMConfig
from videocm.distill.scm import RCMConfig, SCMConfig
from videocm.errors import VideoCMError
from videocm.recipes import LARGE_BYTES, all_recipes, recipe_for_teacher, recipe_lines, recipe_named

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"lcm-full": LCMConfig, "lcm-lora": LCMConfig, "dcm": DCMConfig, "dmd": DMDConfig, "scm": SCMConfig,
           "rcm": RCMConfig}
AUTHORS = {"dcm": "DCM", "scm": "rCM", "rcm": "rCM"}  # methods whose built-in defaults are their authors' values


def fake_pipeline(folder: Path, pipeline: str, config: dict, two_experts: bool = False,
                  size: int = 2 * LARGE_BYTES) -> Path:
    """A pipeline folder's layout files, with a sparse weight file of ``size`` bytes (no disk used)."""
    folder.mkdir(parents=True)
    parts = {"transformer": ["diffusers", "X"], "transformer_2": ["diffusers", "X"] if two_experts else [None, None]}
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline, **parts}))
    (folder / "transformer").mkdir()
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    with (folder / "transformer" / "diffusion_pytorch_model.safetensors").open("wb") as handle:
        handle.truncate(size)
    return folder


def test_every_recipe_value_is_a_valid_setting_of_its_method_with_a_source():
    recipes = all_recipes()
    assert {r.name for r in recipes} >= {"moving-digits", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-t2v-a14b",
                                         "wan2.2-ti2v-5b", "cogvideox", "hunyuanvideo", "ltx-video",
                                         "modelscope-t2v"}
    for recipe in recipes:
        assert recipe.methods, recipe.name
        for key, values in recipe.methods.items():
            known = {s.name for s in settings(CLASSES[key])}
            assert set(values) <= known, (recipe.name, key, set(values) - known)
            assert all(v.source.strip() for v in values.values())
            config_from_dict(CLASSES[key], {k: v.value for k, v in values.items()}, f"{recipe.name} {key}")
            if key == "lcm-lora":
                assert "lora_rank" in values
            if recipe.name != "moving-digits":
                # a real teacher's recipe says how long, how fast, and how the target is made
                assert {"batch_size"} <= set(values) and ({"lr", "steps"} <= set(values) or key == "dcm")


def test_the_moving_digits_recipe_is_the_built_in_defaults_or_says_why_not_beside_dcms_value():
    """LCM and DMD: the built-in defaults are the test bench's values. DCM, sCM and rCM: the defaults are the
    authors' (DCM's, rCM's); each value the test bench uses instead is ours, with the authors' value named beside it."""
    recipe = recipe_named("moving-digits")
    departures = set()
    for key, values in recipe.methods.items():
        defaults = CLASSES[key]()
        for name, value in values.items():
            if getattr(defaults, name) != value.value:
                assert key in AUTHORS and value.source.startswith("ours") and AUTHORS[key] in value.source, (key, name)
                departures.add((key, name))
    assert {("dcm", n) for n in ("semantic_lr", "detail_lr", "target", "split", "disc_head", "disc_lr")} <= departures
    assert {("scm", "lr"), ("rcm", "lr"), ("rcm", "fake_lr")} <= departures


def test_the_teacher_folder_picks_its_recipe_by_layout(tmp_path):
    wan = {"num_layers": 30, "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16}
    big = {"num_layers": 40, "num_attention_heads": 40, "in_channels": 16}
    picked = {
        "wan2.1-t2v-1.3b": fake_pipeline(tmp_path / "a", "WanPipeline", wan),
        "wan2.1-t2v-14b": fake_pipeline(tmp_path / "b", "WanPipeline", big),
        "wan2.2-t2v-a14b": fake_pipeline(tmp_path / "c", "WanPipeline", big, two_experts=True),
        "wan2.2-ti2v-5b": fake_pipeline(tmp_path / "d", "WanPipeline", {**wan, "in_channels": 48}),
        "cogvideox": fake_pipeline(tmp_path / "e", "CogVideoXPipeline", {"num_layers": 30}),
        "hunyuanvideo": fake_pipeline(tmp_path / "f", "HunyuanVideoPipeline", {}),
        "ltx-video": fake_pipeline(tmp_path / "g", "LTXPipeline", {}),
        "modelscope-t2v": fake_pipeline(tmp_path / "h", "TextToVideoSDPipeline", {}),
        "moving-digits": REPO / "models" / "teacher-flow",
    }
    for name, folder in picked.items():
        assert recipe_for_teacher(folder).name == name, folder
    # a small network (the test pipelines, a toy of your own) gets the test bench's; an unknown layout none
    assert recipe_for_teacher(fake_pipeline(tmp_path / "small", "WanPipeline", wan, size=1000)).name == "moving-digits"
    assert recipe_for_teacher(fake_pipeline(tmp_path / "odd", "WanPipeline", {**wan, "num_layers": 7})) is None
    assert recipe_for_teacher(tmp_path / "missing") is None


def test_distill_prints_its_recipe_with_sources_and_flags_and_yaml_override_it(tmp_path, capsys):
    teacher = fake_pipeline(tmp_path / "wan", "WanPipeline", {"num_layers": 30, "num_attention_heads": 12,
                                                             "in_channels": 16})
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("run:\n  steps: 7\n")
    _, _, config = parse_command(["distill", "--teacher", str(teacher), "--student", "lora", "--lr", "3e-4",
                                  "--config", str(yaml_file), "--out", str(tmp_path / "out")])
    said = "\n".join(recipe_lines(config))
    assert "recipe wan2.1-t2v-1.3b" in said and "lcm-lora" in said
    assert "--lora-rank 64  (diffusers README (LCM-LoRA): --lora_rank=64)" in said
    assert "--lr 0.0001 -> 0.0003 (given)" in said and "--steps 1000 -> 7 (given)" in said
    assert (config.recipe, config.lora_rank, config.lr, config.steps) == ("wan2.1-t2v-1.3b", 64, 3e-4, 7)
    assert (config.frames, config.height, config.width, config.max_sequence_length) == (81, 480, 832, 512)
    assert config.target == "online" and config.min_lr_ratio == 1.0
    # DCM on the same teacher: DCM's own values, DCM's split as a noise level
    _, _, dcm = parse_command(["distill", "--method", "dcm", "--teacher", str(teacher), "--out", str(tmp_path / "o")])
    assert (dcm.semantic_lr, dcm.detail_lr, dcm.boundary_timesteps, dcm.detail_lora_rank) == (1e-6, 5e-6, [0.9754],
                                                                                               128)
    assert dcm.semantic_minutes == 0 and dcm.guidance == 6.0
    # none: the built-in defaults; a recipe by name on any teacher
    _, _, plain = parse_command(["distill", "--teacher", str(teacher), "--recipe", "none", "--out", str(tmp_path / "p")])
    assert (plain.lr, plain.frames, plain.recipe) == (LCMConfig().lr, None, "none")
    _, _, named = parse_command(["distill", "--teacher", str(REPO / "models" / "teacher-flow"), "--recipe",
                                 "hunyuanvideo", "--out", str(tmp_path / "q")])
    assert (named.recipe, named.batch_size) == ("hunyuanvideo", 16)


def test_a_method_without_public_values_keeps_the_defaults_and_says_so(tmp_path, capsys):
    teacher = fake_pipeline(tmp_path / "ltx", "LTXPipeline", {})
    _, _, config = parse_command(["distill", "--method", "dmd", "--teacher", str(teacher), "--out", str(tmp_path / "o")])
    assert "has no dmd settings" in recipe_lines(config)[0]
    assert config.recipe == "ltx-video" and config.lr == DMDConfig().lr


def test_the_built_in_teacher_and_a_tiny_pipeline_print_the_test_bench_recipe(tiny_teachers, tmp_path, capsys):
    _, _, config = parse_command(["distill", "--out", str(tmp_path / "o")])
    assert config.recipe == "moving-digits"
    plain = parse_command(["distill", "--recipe", "none", "--out", str(tmp_path / "o")])[2]
    assert dataclasses.replace(config, recipe="none") == plain  # the recipe's values are the defaults
    from tiny_pipelines import build_tiny_pipeline

    pipeline = build_tiny_pipeline("wan", tmp_path / "tiny")
    _, _, tiny = parse_command(["distill", "--teacher", str(pipeline), "--out", str(tmp_path / "t")])
    said = recipe_lines(tiny)  # a small network: the test bench's values, each with its source
    assert tiny.recipe == "moving-digits" and "recipe moving-digits" in said[0] and "MB denoiser" in said[0]
    assert any(line.strip().startswith("--lr 0.0001  (ours: models/lcm-flow/README.md") for line in said[1:]), said
    assert dataclasses.replace(tiny, recipe="none") == parse_command(
        ["distill", "--teacher", str(pipeline), "--recipe", "none", "--out", str(tmp_path / "t")])[2]
    built_in = recipe_lines(config)
    assert built_in[0].startswith("recipe moving-digits") and "MB denoiser" not in built_in[0]
    odd = fake_pipeline(tmp_path / "odd", "WanPipeline", {"num_layers": 7, "num_attention_heads": 3})
    _, _, unknown = parse_command(["distill", "--teacher", str(odd), "--out", str(tmp_path / "u")])
    assert "none matches" in recipe_lines(unknown)[0]  # a real network of a layout no recipe knows


def test_unknown_recipe_is_a_one_line_error(capsys):
    assert main(["distill", "--recipe", "wan9", "--out", "unused-out"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--recipe 'wan9' is not a recipe" in err and "wan2.1-t2v-1.3b" in err and "\n" not in err
    with pytest.raises(VideoCMError, match="is not a recipe"):
        recipe_named("wan9")


def test_recipes_command_lists_them_and_shows_one_with_its_sources(capsys):
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{r.name}:" in listed for r in all_recipes())
    assert main(["recipes", "--name", "wan2.1-t2v-1.3b"]) == 0
    shown = capsys.readouterr().out
    assert "--learning_rate=1e-6" in shown and "Vchitect/DCM" in shown and "teacher flow_shift" in shown
