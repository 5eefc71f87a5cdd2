"""Real model classes end to end: tiny random-initialised diffusers pipelines of the five text-to-video layouts (saved with
``save_pretrained``, loaded back through the code a user's checkpoint takes), distilled from a folder of video
files, sampled, exported, and run in the diffusers pipeline itself.

Tolerance of "the same clip": the exported pipeline's float frames against ``videocm sample``'s uint8 frames differ
by at most 2/255 (uint8 rounding is 0.5/255; the rest is float32 summation order).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tiny_pipelines import LAYOUTS, SPECS, build_tiny_pipeline, call_kwargs
from videocm.distill.trainer import Step
from videocm.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHAPE = ["--frames", "9", "--height", "32", "--width", "32"]
TEXT = {"unet3d": [], "cogvideox": ["--max-sequence-length", "16"], "wan": ["--max-sequence-length", "16"],
        "hunyuan": ["--max-sequence-length", "16"], "ltx": ["--max-sequence-length", "16"]}
PROMPT = "a red 3 moving left"
MODELS = Path(__file__).resolve().parents[1] / "models"
TOLERANCE = 2 / 255


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    return {layout: build_tiny_pipeline(layout, root / layout) for layout in LAYOUTS}


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory) -> Path:
    """Six MovingDigits clips as mp4 and gif with captions.jsonl, plus a corrupt file and a too-short clip."""
    from videocm.data.moving_digits import Geometry, make_clip
    from videocm.data.video_io import write_video

    folder = tmp_path_factory.mktemp("videos")
    lines = []
    for i in range(6):
        clip = make_clip(i, 0, "train", Geometry(12, 32))
        name = f"clip{i}.{'gif' if i % 2 else 'mp4'}"
        write_video(folder / name, clip.video, fps=8)
        lines.append({"file": name, "caption": clip.caption})
    (folder / "broken.mp4").write_bytes(b"this is not a video")
    write_video(folder / "short.mp4", make_clip(9, 0, "train", Geometry(4, 32)).video)
    lines += [{"file": "broken.mp4", "caption": "a broken clip"}, {"file": "short.mp4", "caption": "a short clip"}]
    (folder / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def distil(layout, method, teacher, data, out, *extra) -> None:
    steps = (["--steps", "2"] if method in ("lcm", "scm", "rcm") else
             ["--semantic-steps", "1", "--detail-steps", "1", "--grid-points", "20"])
    code = main(["distill", "--method", method, "--teacher", str(teacher), "--data", str(data), "--out", str(out),
                 *SHAPE, *TEXT[layout], *steps, "--batch-size", "2", "--sample-every", "0", "--cpu", "true", *extra])
    assert code == 0


def videocm_clip(student: Path, out: Path, seed: int = 5, steps: int = 2) -> np.ndarray:
    assert main(["sample", "--model", str(student), "--prompt", PROMPT, "--out", str(out), "--steps", str(steps),
                 "--seed", str(seed)]) == 0
    return np.load(out)


def diffusers_clip(pipe, layout: str, guidance: float, seed: int = 5, steps: int = 2) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    pipe.scheduler.generator = generator  # used by videocm's scheduler; LCMScheduler gets it from the pipeline
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, generator=generator, output_type="np",
                **call_kwargs(layout)).frames[0]


def usage_snippet(export: Path) -> tuple[str, int, int]:
    """The one Python block of ``HOW_TO_USE.md`` with the test prompt in, its step count and seed."""
    text = (export / "HOW_TO_USE.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, text
    code = blocks[0]
    assert code.count('"your prompt"') == 1 and "video = " in code
    steps = int(re.search(r"num_inference_steps=(\d+)", code).group(1))
    seed = int(re.search(r"torch\.Generator\(\)\.manual_seed\((\d+)\)", code).group(1))
    return code.replace('"your prompt"', repr(PROMPT)), steps, seed


def run_snippet(code: str, fresh_interpreter: bool) -> np.ndarray:
    """Run ``code`` (here, or in a new Python that has imported nothing) and return its ``video`` in [0, 1]."""
    if fresh_interpreter:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "video.npy"
            save = f"\nimport numpy as np\nnp.save({str(out)!r}, np.asarray(video, dtype=np.float32))\n"
            done = subprocess.run([sys.executable, "-c", code + save], capture_output=True, text=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            return np.load(out)
    namespace: dict = {}
    exec(compile(code, "HOW_TO_USE.md", "exec"), namespace)
    video = namespace["video"]
    if isinstance(video, list):  # PIL frames (the pipelines whose default output is "pil")
        return np.stack([np.asarray(frame, dtype=np.float32) / 255 for frame in video])
    return np.asarray(video, dtype=np.float32)


def test_pipeline_teacher_loads_in_its_dtype_and_gives_a_float32_student(pipelines):
    from videocm.distill.core import new_student
    from videocm.distill.lcm import LCMConfig
    from videocm.models.folder import load_model
    from videocm.models.pipelines import component_dtype

    # on a GPU the text encoders and the VAE load in bfloat16, on the CPU in float32
    assert (component_dtype("cuda"), component_dtype("cpu")) == (torch.bfloat16, torch.float32)
    teacher = load_model(pipelines["wan"], "cpu", video_shape=[9, 32, 32], max_sequence_length=16,
                         dtype=torch.bfloat16)  # what --teacher-dtype auto gives on a GPU
    network = teacher.denoiser.network
    keep = network._keep_in_fp32_modules  # diffusers keeps these in float32 (Wan's time embedder, norms)
    for name, parameter in network.named_parameters():
        kept = any(part in keep for part in name.split("."))
        assert parameter.dtype == (torch.float32 if kept else torch.bfloat16), name
    assert {p.dtype for p in teacher.text.pipeline.text_encoder.parameters()} == {torch.float32}
    student = new_student(teacher.denoiser, LCMConfig(teacher=str(pipelines["wan"])), "cpu")
    assert {p.dtype for p in student.parameters()} == {torch.float32}  # float32 master weights
    first = next(iter(student.state_dict()))
    assert torch.equal(student.state_dict()[first], teacher.denoiser.state_dict()[first].float())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pipeline_folder_loads_as_a_teacher(pipelines, layout):
    from videocm.models.folder import load_model
    from videocm.pipeline import VideoPipeline

    teacher = load_model(pipelines[layout], "cpu", video_shape=[9, 32, 32], max_sequence_length=16)
    expected = {"unet3d": ("vp", "epsilon"), "cogvideox": ("vp", "v_prediction"), "wan": ("flow", "flow"),
                "hunyuan": ("flow", "flow"), "ltx": ("flow", "flow")}[layout]
    assert (teacher.info.schedule["type"], teacher.info.prediction_type) == expected
    assert teacher.info.family == layout and teacher.info.pipeline_class == SPECS[layout]["pipeline"]
    latent = list(SPECS[layout].get("unpacked_shape", SPECS[layout]["latent_shape"])[1:])
    if SPECS[layout]["latent_layout"] == "BTChw":  # videocm keeps (C, T, h, w) for every family
        latent[0], latent[1] = latent[1], latent[0]
    assert teacher.info.latent_shape == latent
    text = teacher.text.encode([PROMPT, ""])
    assert (("pooled_projections" in text) and ("encoder_attention_mask" in text)) == (layout == "hunyuan")
    assert not torch.equal(text["encoder_hidden_states"][0], text["encoder_hidden_states"][1])
    if layout == "wan":  # Wan's pipeline zeroes the states past the prompt's tokens
        assert float(text["encoder_hidden_states"][1, 2:].abs().max()) == 0.0
    if layout == "cogvideox":
        assert teacher.schedule.zero_terminal_snr
    clips = VideoPipeline(teacher).generate([PROMPT], [0], steps=3)
    assert clips[0].shape == (9, 32, 32, 3) and clips[0].dtype == np.uint8 and clips[0].std() > 0


def test_missing_or_unknown_parts_are_one_line_errors(pipelines, video_folder, tmp_path, capsys):
    broken = tmp_path / "wan"
    shutil.copytree(pipelines["wan"], broken)
    shutil.rmtree(broken / "text_encoder")
    code = main(["distill", "--teacher", str(broken), "--data", str(video_folder), "--out", str(tmp_path / "o"),
                 *SHAPE])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "text_encoder" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    index = json.loads((broken / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (broken / "model_index.json").write_text(json.dumps(index))
    assert main(["sample", "--model", str(broken), "--prompt", "x", "--out", str(tmp_path / "x.npy")]) == 2
    assert "StableDiffusionPipeline" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(pipelines["wan"]), "--out", str(tmp_path / "p")]) == 2
    assert "--data" in capsys.readouterr().err  # a pipeline teacher needs the user's videos
    for frames, wanted in (("8", "4k+1"), ("5", "8k+1")):  # the video VAE's frame rules, before any work
        assert main(["sample", "--model", str(pipelines["cogvideox"]), "--prompt", "x", "--out", str(tmp_path / "c.npy"),
                     "--frames", frames, "--height", "32", "--width", "32"]) == 2
        assert wanted in capsys.readouterr().err


def test_wan22_two_expert_teacher_switches_at_its_boundary(video_folder, tmp_path, capsys):
    """Wan 2.2 A14B's layout (transformer_2, boundary_ratio) used to load and silently run the high-noise
    transformer at every timestep. Now each timestep goes to its expert, as WanPipeline does; distilling it is
    control training refuses it in one line."""
    from tiny_pipelines import build_tiny_wan22
    from videocm.models.denoisers import TwoStageDenoiser
    from videocm.models.folder import load_model

    two = build_tiny_wan22(tmp_path / "wan22")
    teacher = load_model(two, "cpu", video_shape=[9, 32, 32], max_sequence_length=16)
    denoiser = teacher.denoiser
    assert isinstance(denoiser, TwoStageDenoiser) and denoiser.boundary == 875.0
    x = torch.randn(3, *teacher.info.latent_shape, generator=torch.Generator().manual_seed(0))
    states = teacher.text.encode([PROMPT] * 3)
    timestep = torch.tensor([900.0, 100.0, 875.0])
    with torch.no_grad():
        mixed = denoiser(x, timestep, **states)
        for row, expert in ((0, denoiser.base), (1, denoiser.low), (2, denoiser.base)):
            alone = expert(x[row:row + 1], timestep[row:row + 1], **{k: v[row:row + 1] for k, v in states.items()})
            torch.testing.assert_close(mixed[row:row + 1], alone)
        assert not torch.allclose(denoiser.base(x, timestep, **states), denoiser.low(x, timestep, **states))
    # sampling runs the low-noise expert at its timesteps: the clip differs from the high-noise expert's alone
    assert main(["sample", "--model", str(two), "--prompt", PROMPT, "--out", str(tmp_path / "two.npy"), *SHAPE,
                 "--max-sequence-length", "16", "--steps", "6"]) == 0
    single = tmp_path / "single"
    shutil.copytree(two, single, ignore=shutil.ignore_patterns("transformer_2"))
    index = json.loads((single / "model_index.json").read_text())
    (single / "model_index.json").write_text(json.dumps({**index, "transformer_2": [None, None],
                                                         "boundary_ratio": None}))
    assert main(["sample", "--model", str(single), "--prompt", PROMPT, "--out", str(tmp_path / "one.npy"), *SHAPE,
                 "--max-sequence-length", "16", "--steps", "6"]) == 0
    assert np.abs(np.load(tmp_path / "two.npy").astype(float) - np.load(tmp_path / "one.npy")).max() > 2
    capsys.readouterr()
    assert main(["train-control", "--teacher", str(two), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Wan 2.2 two-expert pipeline" in err and "control training" in err and len(err.splitlines()) == 1


def test_wan22_guidance_2_guides_the_low_noise_experts_steps(video_folder, tmp_path, monkeypatch, capsys):
    """WanPipeline's guidance_scale_2: the low-noise transformer's steps take their own guidance, in sampling and in
    the distillation target; anything else refuses --guidance-2 in one line."""
    from tiny_pipelines import build_tiny_wan22
    from videocm.diffusion import sampling
    from videocm.distill import lcm
    from videocm.models.folder import load_model
    from videocm.pipeline import VideoPipeline

    two = build_tiny_wan22(tmp_path / "wan22")
    pipeline = VideoPipeline(load_model(two, "cpu", video_shape=[9, 32, 32], max_sequence_length=16))
    seen, real_guided = [], sampling.guided_output

    def spy(denoiser, x, timestep, cond, uncond=None, guidance_scale=1.0, paired=None):
        seen.append((float(timestep[0]), guidance_scale))
        return real_guided(denoiser, x, timestep, cond, uncond, guidance_scale, paired)

    monkeypatch.setattr(sampling, "guided_output", spy)
    split = pipeline.generate([PROMPT], [0], 6, 4.0, guidance_2=2.0)
    assert {g for t, g in seen if t >= 875} == {4.0} and {g for t, g in seen if t < 875} == {2.0}
    assert np.array_equal(pipeline.generate([PROMPT], [0], 6, 4.0, guidance_2=4.0),
                          pipeline.generate([PROMPT], [0], 6, 4.0))
    assert not np.array_equal(split[0], pipeline.generate([PROMPT], [0], 6, 4.0)[0])
    capsys.readouterr()
    assert main(["sample", "--model", str(MODELS / "teacher-flow"), "--prompt", PROMPT, "--guidance-2", "2",
                 "--out", str(tmp_path / "x.npy")]) == 2
    assert "two-expert teacher" in capsys.readouterr().err
    # the distillation target: rows whose high time is the low-noise expert's take --guidance-2
    config = lcm.LCMConfig(teacher=str(two), data=str(video_folder), out=str(tmp_path / "run"), frames=9, height=32,
                           width=32, max_sequence_length=16, batch_size=8, guidance=4.0, guidance_2=2.0, cpu=True)
    task = lcm.LCMTask(config)
    caught = {}
    real_step = lcm.consistency_step

    def step_spy(*args, **kwargs):
        caught["index"], caught["skip"], caught["w"] = args[8], args[9], args[12]
        return real_step(*args, **kwargs)

    monkeypatch.setattr(lcm, "consistency_step", step_spy)
    d = task.teacher_context
    task.loss(task.model, Step(0, np.random.default_rng(3), torch.Generator().manual_seed(3), torch.device("cpu"), 8))
    high = d.schedule.model_timestep(d.grid[caught["index"] + caught["skip"]]) >= 875
    assert 0 < int(high.sum()) < 8  # both experts' rows in the batch
    torch.testing.assert_close(caught["w"], torch.where(high, 4.0, 2.0).float())
    assert task.student_info().guidance.scale_2 == 2.0


@pytest.mark.parametrize("conditioned", [True, False], ids=["0.9.1-on", "0.9.0"])
def test_ltx_vae_decodes_as_the_pipeline_with_and_without_timestep_conditioning(conditioned):
    """LTX-Video 0.9.1 on decodes at timestep 0; 0.9.0's VAE takes no timestep: each is called its own way."""
    from diffusers import AutoencoderKLLTXVideo
    from videocm.models.vae import VideoVAE

    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5, patch_size=2,
        timestep_conditioning=conditioned).eval()
    wrapped = VideoVAE(vae, normalisation="config")
    latents = torch.randn(1, 4, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    raw = latents * wrapped.std + wrapped.mean
    with torch.no_grad():
        theirs = (vae.decode(raw, torch.zeros(1)) if conditioned else vae.decode(raw)).sample.clamp(-1, 1)
        torch.testing.assert_close(wrapped.decode(latents), theirs)


def test_ltx_teacher_is_read_as_its_pipeline_runs_it(pipelines, tmp_path, capsys):
    """LTX-Video's own conventions, each against the pipeline's code: the VAE statistics kept as weights, the
    dynamic shift fixed at the clip's token count, the packed re-noising noise, the rope scale; a transformer of
    patch size 2 is refused in one line."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift
    from videocm.models.folder import load_model
    from videocm.pipeline import drawn_in_order

    teacher = load_model(pipelines["ltx"], "cpu", video_shape=[9, 32, 32], max_sequence_length=16)
    pipe = LTXPipeline.from_pretrained(pipelines["ltx"])
    raw = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    normalised = LTXPipeline._normalize_latents(raw, pipe.vae.latents_mean, pipe.vae.latents_std,
                                                pipe.vae.config.scaling_factor)
    torch.testing.assert_close((raw - teacher.vae.mean) / teacher.vae.std, normalised)
    # the pipeline's sigmas at mu = calculate_shift(48 tokens) are the fixed shift's (without shift_terminal's
    # stretch of its own step grid, which videocm does not apply: the same ODE, other sampling points)
    config = dict(pipe.scheduler.config)
    mu = calculate_shift(48, config["base_image_seq_len"], config["max_image_seq_len"], config["base_shift"],
                         config["max_shift"])
    theirs = FlowMatchEulerDiscreteScheduler.from_config({**config, "shift_terminal": None})
    theirs.set_timesteps(8, mu=mu)
    assert teacher.info.schedule["dynamic_shift_tokens"] == 48 and teacher.info.schedule["mu"] == pytest.approx(mu)
    torch.testing.assert_close(teacher.schedule.sampling_times(8), theirs.sigmas, atol=1e-6, rtol=0)
    # re-noising noise drawn as the packed (tokens, channels) latents the pipeline's scheduler steps on
    generator = torch.Generator().manual_seed(3)
    packed = torch.randn(48, 4, generator=generator)
    drawn = drawn_in_order((4, 3, 4, 4), "ThwC", torch.Generator().manual_seed(3))
    torch.testing.assert_close(LTXPipeline._pack_latents(drawn[None])[0], packed, atol=0, rtol=0)
    assert teacher.info.network_options == {"rope_interpolation_scale": [4 / 25, 8, 8]}
    patched = tmp_path / "patched"
    shutil.copytree(pipelines["ltx"], patched)
    config_path = patched / "transformer" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "patch_size": 2}))
    capsys.readouterr()
    assert main(["sample", "--model", str(patched), "--prompt", "x", "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "patch size 1" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_family_spec_names_modules_of_the_pipeline_network(pipelines, layout):
    """The LoRA targets, a detail expert's own modules and the feature blocks a family names exist in the real
    pipeline network (the built-in families are checked on the networks videocm builds, tests/test_families.py)."""
    from conftest import assert_spec_modules_exist
    from diffusers import DiffusionPipeline
    from videocm.models.families import family_for_pipeline

    pipe = DiffusionPipeline.from_pretrained(pipelines[layout])
    spec = family_for_pipeline(type(pipe).__name__)
    assert_spec_modules_exist(spec, getattr(pipe, spec.subfolder))


@pytest.mark.slow
def assert_i2v_snippet_reproduces(export: Path, student: Path, frame: np.ndarray, folder: Path, monkeypatch) -> None:
    """``HOW_TO_USE.md``'s snippet of an image-to-video export, run as written with its ``first_frame.png`` beside
    it, gives ``videocm sample --image`` at its steps and seed."""
    from PIL import Image

    code, steps, seed = usage_snippet(export)
    Image.fromarray(frame).save(folder / "first_frame.png")
    np.save(folder / "first.npy", frame)
    monkeypatch.chdir(folder)
    snippet = run_snippet(code, fresh_interpreter=False)
    assert main(["sample", "--model", str(student), "--prompt", PROMPT, "--image", str(folder / "first.npy"),
                 "--out", str(folder / "default.npy"), "--steps", str(steps), "--seed", str(seed),
                 "--overwrite"]) == 0
    assert np.abs(snippet - np.load(folder / "default.npy").astype(np.float32) / 255).max() <= TOLERANCE


def test_cogvideox_image_to_video_teacher_distils_and_exports(video_folder, tmp_path, capsys, monkeypatch):
    """CogVideoXImageToVideoPipeline (CogVideoX-5b-I2V's layout): the first frame's latents are made as the
    pipeline makes them (the posterior sampled with the clip's generator first); an LCM student trains on each
    clip's own first frame, exports as the same layout, and the stock pipeline given the image reproduces
    `videocm sample --image`; without an image it is a one-line error."""
    from diffusers import DiffusionPipeline
    from PIL import Image
    from tiny_pipelines import build_tiny_cogvideox_i2v
    from videocm.data.moving_digits import make_clip
    from videocm.models.folder import load_model
    from videocm.pipeline import VideoPipeline

    folder = build_tiny_cogvideox_i2v(tmp_path / "i2v")
    teacher = load_model(folder, "cpu", video_shape=[9, 32, 32], max_sequence_length=16)
    assert teacher.info.image_condition == "channels"
    frame = make_clip(3, 0, "test").video[0]
    np.save(tmp_path / "first.npy", frame)
    stock = DiffusionPipeline.from_pretrained(folder)
    image = stock.video_processor.preprocess(Image.fromarray(frame), height=32, width=32)
    _, theirs = stock.prepare_latents(image, 1, 4, 9, 32, 32, torch.float32, "cpu",
                                      torch.Generator().manual_seed(7))
    ours = VideoPipeline(teacher).image_inputs([frame], 1, [torch.Generator().manual_seed(7)])["image_latents"]
    torch.testing.assert_close(ours, theirs.permute(0, 2, 1, 3, 4), rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    assert main(["sample", "--model", str(folder), "--prompt", PROMPT, "--out", str(tmp_path / "x.npy"), *SHAPE,
                 "--max-sequence-length", "16"]) == 2
    assert "image-to-video model: give the first frame (--image FILE)" in capsys.readouterr().err
    student = tmp_path / "student"  # its monitoring samples start from the training videos' first frames
    distil("cogvideox", "lcm", folder, video_folder, student, "--sample-every", "2", "--sample-clips", "2",
           "--on-collapse", "warn")
    assert (student / "samples" / "step-000002.gif").is_file()
    assert main(["sample", "--model", str(student), "--prompt", PROMPT, "--image", str(tmp_path / "first.npy"),
                 "--out", str(tmp_path / "clip.npy"), "--steps", "2", "--seed", "5"]) == 0
    clip = np.load(tmp_path / "clip.npy").astype(np.float32) / 255
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "export")]) == 0
    assert "image=image" in (tmp_path / "export" / "HOW_TO_USE.md").read_text()
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "export")
    assert type(pipe).__name__ == "CogVideoXImageToVideoPipeline"
    pipe.set_progress_bar_config(disable=True)

    def exported(first):
        generator = torch.Generator().manual_seed(5)
        return pipe(image=Image.fromarray(first), prompt=PROMPT, num_inference_steps=2, guidance_scale=1.0,
                    generator=generator, output_type="np", **call_kwargs("cogvideox")).frames[0]

    assert np.abs(exported(frame) - clip).max() <= TOLERANCE
    assert np.abs(exported(make_clip(4, 0, "test").video[0]) - clip).max() > 4 * TOLERANCE  # the image matters
    assert_i2v_snippet_reproduces(tmp_path / "export", student, frame, tmp_path, monkeypatch)
    # DCM: both experts trained on the clips' first frames; the student samples from an image (VP DCM students
    # do not export: LCMScheduler cannot switch between ODE jumps and consistency steps)
    distil("cogvideox", "dcm", folder, video_folder, tmp_path / "dcm")
    assert main(["sample", "--model", str(tmp_path / "dcm"), "--prompt", PROMPT, "--image", str(tmp_path / "first.npy"),
                 "--out", str(tmp_path / "dcm.npy"), "--steps", "2"]) == 0
    assert np.load(tmp_path / "dcm.npy").shape == (9, 32, 32, 3)


def _wan_i2v_clip(pipe, frame, steps: int, seed: int = 5) -> np.ndarray:
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    pipe.scheduler.generator = generator
    pipe.set_progress_bar_config(disable=True)
    return pipe(image=Image.fromarray(frame), prompt=PROMPT, num_inference_steps=steps, guidance_scale=1.0,
                generator=generator, output_type="np", **call_kwargs("wan")).frames[0]


def _i2v_round_trip(method: str, teacher: Path, data: Path, first: Path, out: Path, steps: int):
    """Distil ``teacher`` (an image-to-video pipeline) with ``method``, sample the student from the first frame
    ``first`` (seed 5), export it: ``(the exported pipeline, the student's clip in [0, 1], the student folder)``."""
    from diffusers import DiffusionPipeline

    student = out / method
    distil("wan", method, teacher, data, student)
    assert main(["sample", "--model", str(student), "--prompt", PROMPT, "--image", str(first), "--out",
                 str(out / f"{method}.npy"), "--steps", str(steps), "--seed", "5"]) == 0
    assert main(["export", "--model", str(student), "--out", str(out / f"{method}-export")]) == 0
    pipe = DiffusionPipeline.from_pretrained(out / f"{method}-export")
    return pipe, np.load(out / f"{method}.npy").astype(np.float32) / 255, student


def test_wan_image_to_video_teachers_distil_and_export(video_folder, tmp_path, capsys, monkeypatch):
    """WanImageToVideoPipeline: Wan 2.1 I2V (mask and [image, zeros] latents on channels, CLIP image states), Wan
    2.2 I2V-A14B (two experts, no image encoder) and TI2V-5B's image mode (the image's latents as the first
    frame). The first-frame inputs equal the pipeline's; an LCM student of 2.1, a DCM student of 2.2 (its experts
    from the teacher's) and an LCM student of TI2V export as the same layouts, and the stock pipeline given the
    image reproduces `videocm sample --image`."""
    import videocm  # noqa: F401 - FlowConsistencyScheduler
    from diffusers import DiffusionPipeline
    from PIL import Image
    from tiny_pipelines import build_tiny_wan22_ti2v_image, build_tiny_wan_i2v
    from videocm.data.moving_digits import make_clip
    from videocm.models.folder import load_model
    from videocm.pipeline import VideoPipeline

    frame = make_clip(3, 0, "test").video[0]
    np.save(tmp_path / "first.npy", frame)
    wan21 = build_tiny_wan_i2v(tmp_path / "wan21")
    teacher = load_model(wan21, "cpu", video_shape=[9, 32, 32], max_sequence_length=16)
    assert teacher.info.image_condition == "mask-channels"
    ours = VideoPipeline(teacher).image_inputs([frame], 1)
    stock = DiffusionPipeline.from_pretrained(wan21)
    image = stock.video_processor.preprocess(Image.fromarray(frame), height=32, width=32)
    _, condition = stock.prepare_latents(image, 1, 4, 32, 32, 9, torch.float32, "cpu",
                                         torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours["image_latents"], condition, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["image_states"], stock.encode_image(Image.fromarray(frame), "cpu"))
    pipe, clip, student = _i2v_round_trip("lcm", wan21, video_folder, tmp_path / "first.npy", tmp_path / "21", 2)
    assert type(pipe).__name__ == "WanImageToVideoPipeline" and pipe.image_encoder is not None
    assert np.abs(_wan_i2v_clip(pipe, frame, 2) - clip).max() <= TOLERANCE
    assert np.abs(_wan_i2v_clip(pipe, make_clip(4, 0, "test").video[0], 2) - clip).max() > 4 * TOLERANCE
    assert_i2v_snippet_reproduces(tmp_path / "21" / "lcm-export", student, frame, tmp_path, monkeypatch)

    wan22 = build_tiny_wan_i2v(tmp_path / "wan22", two_experts=True)
    pipe, clip, _ = _i2v_round_trip("dcm", wan22, video_folder, tmp_path / "first.npy", tmp_path / "22", 4)
    assert type(pipe).__name__ == "WanImageToVideoPipeline" and pipe.transformer_2 is not None
    assert np.abs(_wan_i2v_clip(pipe, frame, 4) - clip).max() <= TOLERANCE

    # TI2V-5B's image mode: the image's latents are the first frame (timestep 0 there), the rest is generated
    ti2v = build_tiny_wan22_ti2v_image(tmp_path / "ti2v")
    assert load_model(ti2v, "cpu", video_shape=[9, 32, 32], max_sequence_length=16).info.image_condition == \
        "first-frame"
    pipe, clip, _ = _i2v_round_trip("lcm", ti2v, video_folder, tmp_path / "first.npy", tmp_path / "ti2v-run", 2)
    assert type(pipe).__name__ == "WanImageToVideoPipeline" and pipe.config.expand_timesteps
    assert np.abs(_wan_i2v_clip(pipe, frame, 2) - clip).max() <= TOLERANCE


def test_ti2v_layout_distils_and_exports_text_to_video(video_folder, tmp_path):
    """Wan 2.2 TI2V-5B's layout in WanPipeline (expand_timesteps, the residual 16x VAE): the teacher's network
    given one timestep per clip equals the pipeline's one per token; an LCM student exports as the same layout and
    the stock pipeline (per-token timesteps) reproduces `videocm sample`."""
    import videocm  # noqa: F401
    from diffusers import DiffusionPipeline
    from tiny_pipelines import build_tiny_wan22_ti2v
    from videocm.models.folder import load_model

    folder = build_tiny_wan22_ti2v(tmp_path / "ti2v")
    teacher = load_model(folder, "cpu", video_shape=[9, 32, 32], max_sequence_length=16)
    assert teacher.info.latent_shape == [8, 3, 2, 2]  # 16x spatial
    network = teacher.denoiser.network
    x = torch.randn(2, 8, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    states = teacher.text.encode([PROMPT, "a blue 7 moving up"])["encoder_hidden_states"]
    with torch.no_grad():
        per_clip = network(hidden_states=x, timestep=torch.tensor([700.0, 300.0]), encoder_hidden_states=states,
                           return_dict=False)[0]
        tokens = 3 * 1 * 1
        per_token = network(hidden_states=x, timestep=torch.tensor([700.0, 300.0])[:, None].expand(2, tokens),
                            encoder_hidden_states=states, return_dict=False)[0]
    torch.testing.assert_close(per_clip, per_token, atol=1e-5, rtol=1e-5)
    student = tmp_path / "student"
    distil("wan", "lcm", folder, video_folder, student)
    ours = videocm_clip(student, tmp_path / "clip.npy").astype(np.float32) / 255
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "export")]) == 0
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "export")
    assert pipe.config.expand_timesteps and type(pipe.vae).__name__ == "AutoencoderKLWan"
    theirs = diffusers_clip(pipe, "wan", 1.0)
    assert theirs.shape == ours.shape and np.abs(theirs - ours).max() <= TOLERANCE


@pytest.mark.slow
def test_lcm_student_of_a_two_expert_teacher_exports_as_one_transformer(video_folder, tmp_path):
    """LCM on Wan 2.2's layout: the teacher's ODE step routes each row to its expert, the student is one network
    (copied from the expert --student-init names; auto: the one owning more of the grid) and exports as the
    stock one-transformer WanPipeline, which reproduces `videocm sample`."""
    import videocm  # noqa: F401
    from diffusers import DiffusionPipeline
    from tiny_pipelines import build_tiny_wan22
    from videocm.distill.lcm import LCMConfig, LCMTask

    two = build_tiny_wan22(tmp_path / "wan22")
    high = load_file(two / "transformer" / "diffusion_pytorch_model.safetensors")
    low = load_file(two / "transformer_2" / "diffusion_pytorch_model.safetensors")
    config = dict(teacher=str(two), data=str(video_folder), frames=9, height=32, width=32, max_sequence_length=16,
                  cpu=True, out=str(tmp_path / "task"), cache=str(tmp_path / "cache"))
    task = LCMTask(LCMConfig(**config, student_init="high"))
    assert all(torch.equal(task.model.network.state_dict()[k], high[k]) for k in high)
    task = LCMTask(LCMConfig(**config))  # auto: at shift 3, 16 of the 51 grid points lie at or above 875
    grid = task.teacher_context.schedule.model_timestep(task.teacher_context.grid)
    assert int((grid >= 875).sum()) < len(grid) / 2
    assert all(torch.equal(task.model.network.state_dict()[k], low[k]) for k in low)
    student = tmp_path / "student"
    distil("wan", "lcm", two, video_folder, student)
    ours = videocm_clip(student, tmp_path / "clip.npy").astype(np.float32) / 255
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "export")]) == 0
    index = json.loads((tmp_path / "export" / "model_index.json").read_text())
    assert index["transformer_2"] == [None, None] and index["boundary_ratio"] is None
    assert not (tmp_path / "export" / "transformer_2").exists()
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "export")
    assert pipe.transformer_2 is None
    assert np.abs(diffusers_clip(pipe, "wan", 1.0) - ours).max() <= TOLERANCE


@pytest.mark.slow
def test_dcm_student_of_a_two_expert_teacher_exports_as_two_transformers(video_folder, tmp_path):
    """DCM on Wan 2.2's layout: split at the teacher's boundary, the semantic expert from the high-noise network
    and a full detail expert from the low-noise one; exported as the stock two-transformer WanPipeline with a
    boundary_ratio between the two experts' timesteps, which reproduces `videocm sample`."""
    import videocm  # noqa: F401
    from diffusers import DiffusionPipeline
    from tiny_pipelines import build_tiny_wan22
    from videocm.models.folder import load_model

    two = build_tiny_wan22(tmp_path / "wan22")
    student = tmp_path / "student"
    distil("wan", "dcm", two, video_folder, student)
    config = json.loads((student / "videocm.json").read_text())
    boundary = config["phased"]["boundaries"][0]
    grid_times = [t * 1000 for t in config["phased"]["boundary_times"]]
    assert abs(grid_times[0] - 875) < 25  # the grid point nearest the teacher's boundary (20 grid points here)
    loaded = load_model(student)
    assert len(loaded.experts) == 2 and not any(".lora_" in k for k in loaded.experts[1].network.state_dict())
    assert (student / "experts" / "expert-1" / "transformer").is_dir()  # a full network, not a LoRA
    ours = videocm_clip(student, tmp_path / "clip.npy", steps=4).astype(np.float32) / 255
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "export")]) == 0
    index = json.loads((tmp_path / "export" / "model_index.json").read_text())
    assert index["transformer_2"][1] == "WanTransformer3DModel" and 0 < index["boundary_ratio"] < 1
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "export")
    assert type(pipe.transformer).__name__ == "WanTransformer3DModel" and pipe.transformer_2 is not None
    assert np.abs(diffusers_clip(pipe, "wan", 1.0, steps=4) - ours).max() <= TOLERANCE


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.slow
def test_lcm_student_of_each_layout_matches_in_the_diffusers_pipeline(pipelines, video_folder, tmp_path, layout,
                                                                       capsys):
    import videocm  # noqa: F401 - diffusers loads videocm's scheduler by name once videocm is imported
    from diffusers import DiffusionPipeline

    student = tmp_path / "student"
    distil(layout, "lcm", pipelines[layout], video_folder, student)
    out = capsys.readouterr()
    assert "6 usable videos, 2 skipped" in out.out and "broken.mp4" in out.err and "short.mp4" in out.err
    info = json.loads((student / "videocm.json").read_text())
    assert info["kind"] == "student" and not (student / "vae").exists()  # VAE and text stay in the pipeline
    ours = videocm_clip(student, tmp_path / "clip.npy").astype(np.float32) / 255
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "export")]) == 0
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "export")
    expected = {"unet3d": "LCMScheduler", "cogvideox": "LCMScheduler", "wan": "FlowConsistencyScheduler",
                "hunyuan": "FlowConsistencyScheduler", "ltx": "FlowConsistencyScheduler"}[layout]
    assert type(pipe.scheduler).__name__ == expected and type(pipe).__name__ == SPECS[layout]["pipeline"]
    theirs = diffusers_clip(pipe, layout, info.get("embedded_guidance", 1.0))
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() <= TOLERANCE
    # the teacher pipeline's own clip differs: the export really runs the student
    teacher = DiffusionPipeline.from_pretrained(pipelines[layout])
    assert np.abs(diffusers_clip(teacher, layout, info.get("embedded_guidance", 1.0)) - ours).max() > 0.05
    # HOW_TO_USE.md's snippet, run as written (the prompt substituted), gives `videocm sample`'s clip
    code, steps, seed = usage_snippet(tmp_path / "export")
    recorded = json.loads((tmp_path / "export" / "call_arguments.json").read_text())
    assert recorded["num_inference_steps"] == steps and f"num_inference_steps={steps}," in code
    if layout != "unet3d":  # TextToVideoSDPipeline takes no text length; the others get the distilled one
        assert recorded["max_sequence_length"] == int(TEXT[layout][1])
    video = run_snippet(code, fresh_interpreter=layout == "wan")
    expected = videocm_clip(student, tmp_path / "usage.npy", seed=seed, steps=steps).astype(np.float32) / 255
    assert video.shape == expected.shape and np.abs(video - expected).max() <= TOLERANCE
    if layout == "wan":
        # diffusers' stock FlowMatchLCMScheduler gives the same 1-step clip but not the multi-step one: it spaces
        # timesteps linearly instead of on the student's grid, and re-noises from the global RNG (WanPipeline
        # passes no generator to step); so the export keeps FlowConsistencyScheduler (README, Export)
        from diffusers import FlowMatchLCMScheduler

        stock = DiffusionPipeline.from_pretrained(tmp_path / "export")
        stock.scheduler = FlowMatchLCMScheduler(shift=pipe.scheduler.config.shift)
        one = videocm_clip(student, tmp_path / "one.npy", steps=1).astype(np.float32) / 255
        assert np.abs(diffusers_clip(stock, layout, 1.0, steps=1) - one).max() <= TOLERANCE
        assert np.abs(diffusers_clip(stock, layout, 1.0, steps=2) - ours).max() > 4 * TOLERANCE
        # --scheduler stock: an export that needs no videocm. Its HOW_TO_USE snippet runs with videocm unimportable,
        # and at 1 step (no re-noising) gives `videocm sample --times stock`'s clip
        assert main(["export", "--model", str(student), "--out", str(tmp_path / "stock"), "--scheduler", "stock"]) == 0
        index = json.loads((tmp_path / "stock" / "model_index.json").read_text())
        assert index["scheduler"] == ["diffusers", "FlowMatchLCMScheduler"] and "videocm" not in json.dumps(index)
        code, _, seed = usage_snippet(tmp_path / "stock")
        assert "import videocm" not in code
        code = code.replace("num_inference_steps=4,", "num_inference_steps=1,")
        video = run_snippet("import sys\nsys.modules['videocm'] = None  # videocm unimportable\n" + code, True)
        assert main(["sample", "--model", str(student), "--prompt", PROMPT, "--out", str(tmp_path / "stock1.npy"),
                     "--steps", "1", "--seed", str(seed), "--times", "stock"]) == 0
        assert np.abs(video - np.load(tmp_path / "stock1.npy").astype(np.float32) / 255).max() <= TOLERANCE
        four = run_snippet("import sys\nsys.modules['videocm'] = None\n" + usage_snippet(tmp_path / "stock")[0], True)
        assert four.shape == video.shape and np.isfinite(four).all()


@pytest.mark.parametrize("layout", ["wan", "hunyuan", "unet3d", "ltx"])  # VP DCM's refusal: unet3d stands for both
@pytest.mark.slow
def test_dcm_student_exports_an_expert_switching_model(pipelines, video_folder, tmp_path, layout, capsys):
    import videocm  # noqa: F401
    from diffusers import DiffusionPipeline

    student = tmp_path / "student"
    distil(layout, "dcm", pipelines[layout], video_folder, student)
    assert len(list((tmp_path / "student").glob("latent-cache/shard-*.safetensors"))) >= 1  # one cache, all stages
    ours = videocm_clip(student, tmp_path / "clip.npy", steps=4).astype(np.float32) / 255
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "export")]) == 0
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "export")
    network = pipe.unet if layout == "unet3d" else pipe.transformer
    assert type(network).__name__ == "ExpertSwitchingModel" and len(network.experts) == 2
    if layout in ("unet3d", "cogvideox"):  # VP DCM: DDIM jumps above the boundary, which LCMScheduler cannot take
        assert type(pipe.scheduler).__name__ == "VPPhasedConsistencyScheduler"
    else:
        assert network.config.patch_size == network.experts[0].config.patch_size
    info = json.loads((student / "videocm.json").read_text())
    theirs = diffusers_clip(pipe, layout, info.get("embedded_guidance", 1.0), steps=4)
    assert np.abs(theirs - ours).max() <= TOLERANCE


@pytest.mark.slow
def test_lora_student_exports_for_load_lora_weights(pipelines, video_folder, tmp_path):
    import videocm  # noqa: F401
    from diffusers import DiffusionPipeline

    student = tmp_path / "student"
    distil("wan", "lcm", pipelines["wan"], video_folder, student, "--student", "lora", "--lora-rank", "4",
           "--lr", "1e-2")
    ours = videocm_clip(student, tmp_path / "clip.npy").astype(np.float32) / 255
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "lora"), "--format", "lora"]) == 0
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    pipe = DiffusionPipeline.from_pretrained(pipelines["wan"])
    before = diffusers_clip(pipe, "wan", 1.0)
    pipe.load_lora_weights(tmp_path / "lora")
    pipe.scheduler = videocm.FlowConsistencyScheduler.from_pretrained(tmp_path / "lora", subfolder="scheduler")
    theirs = diffusers_clip(pipe, "wan", 1.0)
    assert np.abs(theirs - ours).max() <= TOLERANCE
    assert np.abs(before - ours).max() > 0.05
    # the adapter's alpha / rank (16 / 4) is in the file: diffusers loads a file without alphas at scale 1
    loaded = pipe.transformer.blocks[0].attn1.to_q
    trained = load_file(student / "lora" / "adapter_model.safetensors")["blocks.0.attn1.to_q.lora_B.weight"]
    assert torch.allclose(loaded.lora_B["default_0"].weight * loaded.scaling["default_0"], trained * 4.0)
    code, steps, seed = usage_snippet(tmp_path / "lora")  # teacher pipeline + load_lora_weights, as written
    expected = videocm_clip(student, tmp_path / "usage.npy", seed=seed, steps=steps).astype(np.float32) / 255
    assert np.abs(run_snippet(code, fresh_interpreter=False) - expected).max() <= TOLERANCE
    # Wan's original key layout (ComfyUI, Wan's code), read back through diffusers' own converter
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "original"),
                 "--format", "lora-original"]) == 0
    original = load_file(tmp_path / "original" / "lora.safetensors")
    assert "diffusion_model.blocks.0.self_attn.q.lora_A.weight" in original
    assert float(original["diffusion_model.blocks.0.ffn.0.alpha"]) == 16.0
    code, steps, seed = usage_snippet(tmp_path / "original")
    assert 'weight_name="lora.safetensors"' in code
    assert np.abs(run_snippet(code, fresh_interpreter=False) - expected).max() <= TOLERANCE


def test_gradient_checkpointing_gives_the_same_gradients(pipelines, video_folder, tmp_path):
    from videocm.distill.lcm import LCMConfig, LCMTask

    gradients = []
    for checkpointing in (False, True):
        config = LCMConfig(teacher=str(pipelines["wan"]), data=str(video_folder), cache=str(tmp_path / "cache"),
                           out=str(tmp_path / "run"), frames=9, height=32, width=32, max_sequence_length=16,
                           batch_size=2, gradient_checkpointing=checkpointing, cpu=True)
        task = LCMTask(config, "cpu")
        assert task.model.network.is_gradient_checkpointing == checkpointing
        loss, _ = task.loss(task.model, Step(0, np.random.default_rng(0), torch.Generator().manual_seed(0), torch.device("cpu"), task.config.batch_size))
        loss.backward()
        gradients.append(torch.cat([p.grad.flatten() for p in task.model.parameters() if p.grad is not None]))
    assert gradients[0].abs().sum() > 0
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-4, atol=1e-6)


def test_encode_command_writes_a_cache_training_reads(pipelines, video_folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["encode", "--teacher", str(pipelines["wan"]), "--data", str(video_folder), "--out", str(cache), *SHAPE,
            "--max-sequence-length", "16", "--shard-size", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "6 clips encoded, 2 videos skipped" in out
    index = json.loads((cache / "index.json").read_text())
    assert index["count"] == 6 and len(index["shards"]) == 2 and index["complete"]
    from videocm.data.latent_cache import LatentCache

    loaded = LatentCache(cache)
    assert tuple(loaded.latents.shape) == (6, 4, 3, 4, 4)
    assert "a " in loaded.captions[0] and loaded.texts["encoder_hidden_states"].shape[:2] == (6, 16)
    assert main(args) == 0  # a finished cache: nothing to do, same index
    assert json.loads((cache / "index.json").read_text()) == index
    distil("wan", "lcm", pipelines["wan"], cache, tmp_path / "student", "--gradient-checkpointing", "true")
    assert not (tmp_path / "student" / "latent-cache").exists()  # trained from the given cache
    # a cache made for another clip shape is refused with a one-line error
    code = main(["distill", "--teacher", str(pipelines["wan"]), "--data", str(cache), "--out", str(tmp_path / "x"),
                 "--frames", "5", "--height", "32", "--width", "32", "--max-sequence-length", "16"])
    assert code == 2 and "latent_shape" in capsys.readouterr().err


def test_a_pipeline_run_resumes_from_its_own_settings(pipelines, video_folder, tmp_path, capsys):
    """A Wan pipeline distilled from a video folder, stopped at step 1, resumes with ``--out --resume`` alone (its
    teacher, data, clip shape and text length come from its config.yaml); a new --steps is recorded, a new clip
    shape refused in one line."""
    out = tmp_path / "run"
    distil("wan", "lcm", pipelines["wan"], video_folder, out, "--checkpoint-every", "1", "--stop-at-step", "1")
    said = capsys.readouterr().err  # the recipe it used, each value with its source
    assert "videocm: recipe moving-digits" in said and "MB denoiser" in said and "--lr 0.0001  (ours: " in said
    assert main(["distill", "--out", str(out), "--resume", "--frames", "13"]) == 2
    assert "was started with --frames 9" in capsys.readouterr().err
    assert main(["distill", "--out", str(out), "--resume", "--steps", "3"]) == 0
    changes = [json.loads(line) for line in (out / "resume_changes.jsonl").read_text().splitlines()]
    assert changes == [{"step": 1, "setting": "steps", "from": 2, "to": 3}]
    assert json.loads((out / "train_summary.json").read_text())["steps_done"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("layout,method", [("wan", "scm"), ("unet3d", "rcm")])
def test_continuous_time_student_exports_and_matches_in_the_diffusers_pipeline(pipelines, video_folder, tmp_path,
                                                                                layout, method):
    """An sCM / rCM student of a pipeline teacher (flow and VP) trains from a video folder, samples with the sCM
    sampler, and its export (videocm's TrigFlowConsistencyScheduler; no stock scheduler feeds these networks)
    gives `videocm sample`'s clips in the diffusers pipeline, the HOW_TO_USE snippet included."""
    from diffusers import DiffusionPipeline

    student = tmp_path / "student"
    extra = ["--tangent-warmup", "1", "--lr", "1e-4"] + (["--fake-updates", "1"] if method == "rcm" else [])
    distil(layout, method, pipelines[layout], video_folder, student, *extra)
    info = json.loads((student / "videocm.json").read_text())
    assert info["method"] == method and info["consistency"]["parameterization"] == "trigflow"
    ours = videocm_clip(student, tmp_path / "clip.npy").astype(np.float32) / 255
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "export")]) == 0
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "export")
    assert type(pipe.scheduler).__name__ == "TrigFlowConsistencyScheduler"
    theirs = diffusers_clip(pipe, layout, info.get("embedded_guidance", 1.0))
    assert theirs.shape == ours.shape and np.abs(theirs - ours).max() <= TOLERANCE
    code, steps, seed = usage_snippet(tmp_path / "export")
    video = run_snippet(code, fresh_interpreter=False)
    expected = videocm_clip(student, tmp_path / "usage.npy", seed=seed, steps=steps).astype(np.float32) / 255
    assert np.abs(video - expected).max() <= TOLERANCE
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "stock"), "--scheduler", "stock"]) == 2
