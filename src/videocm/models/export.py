"""``videocm export``: a student handed back to diffusers.

Formats (``--format``):

* ``pipeline`` (default for students of a diffusers pipeline teacher): ``OUT`` is a complete pipeline folder of
  the teacher's class that ``DiffusionPipeline.from_pretrained(OUT)`` loads: the student's denoiser (full
  weights; for DCM an :class:`ExpertSwitchingModel`), a scheduler for it, and the teacher's other parts (text
  encoders, tokenizers, VAE) linked (``--copy``: copied).
* ``model``: the denoiser alone as a diffusers model folder (``OUT/transformer`` or ``OUT/unet``) plus
  ``OUT/scheduler``; for students of videocm's own teachers, whose text encoder no diffusers pipeline takes.
* ``lora``: a LoRA student's adapter as ``OUT/pytorch_lora_weights.safetensors`` (what the pipeline's
  ``load_lora_weights`` reads, with the teacher's denoiser) plus ``OUT/scheduler``. The adapter's ``alpha / rank``
  is folded into its up matrices: diffusers loads a file without alphas at scale 1.
* ``lora-original``: the same adapter in the network's original (non-diffusers) key layout, ``OUT/lora.safetensors``
  with an ``.alpha`` per module (Wan: ``diffusion_model.blocks.N.self_attn.q.lora_A.weight`` ..., what ComfyUI
  and Wan's own code read, and what diffusers' converter for such LoRAs takes).

Schedulers: diffusers' ``LCMScheduler`` for VP students (same grid, scalings and timestep choice as
``videocm sample``); :class:`FlowConsistencyScheduler` for flow-matching students;
:class:`VPPhasedConsistencyScheduler` for VP DCM students (DDIM jumps above the boundary, which ``LCMScheduler``
cannot take). diffusers' own
``FlowMatchLCMScheduler`` was tried in its place (``tests/test_real_models.py``): it reproduces a 1-step clip but
not a multi-step one, because it spaces the timesteps linearly from 1000 to near 0 (4 steps at shift 3: 1000, 858,
602, 9) where the student was trained on its skipping grid and ``videocm sample`` picks from it as
``LCMScheduler`` does (1000, 905, 750, 513), and ``WanPipeline`` neither forwards custom sigmas nor passes its
generator to ``step``, so its re-noising noise comes from the global RNG. It also drops the c_skip/c_out boundary
scalings (negligible at these timesteps).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import VideoCMError
from .families import family_for_pipeline, get_family
from .folder import STORE_DTYPES, cast_for_storage, load_model
from .info import ModelInfo

FORMATS = ("pipeline", "model", "lora", "lora-original")
LORA_FILES = {"lora": "pytorch_lora_weights.safetensors", "lora-original": "lora.safetensors"}
USAGE_FILE = "HOW_TO_USE.md"
TINY_DECODER_PART = "tiny_decoder"  # an optional component beside the pipeline's, not in model_index.json


def stock_flow_scheduler(info: ModelInfo):
    """diffusers' own ``FlowMatchLCMScheduler`` for a flow consistency student with one network and a static
    shift, configured as the teacher's scheduler (its ``shift``): what a stock pipeline (``WanPipeline``) samples
    the student with when the export needs no videocm. Its N times run from 1 to about 0 (the last one at sigma
    0.001, where a consistency step changes almost nothing), where the student's own end at its grid's ``1/N``;
    ``docs/reports/stock-times/`` measures what that costs. A one-line error for students it cannot express."""
    schedule = info.schedule
    if info.consistency is not None and info.consistency.parameterization == "trigflow":
        raise VideoCMError("a continuous-time (sCM, rCM) student samples at its own TrigFlow times, which no diffusers "
                           "scheduler takes with these networks' inputs (SCMScheduler expects TrigFlow inputs and "
                           "outputs): it exports with videocm's TrigFlowConsistencyScheduler (--scheduler own)")
    if schedule["type"] != "flow":
        raise VideoCMError("stock flow times are for flow-matching students; a VP student exports with diffusers' "
                           "LCMScheduler already")
    if info.is_phased:
        raise VideoCMError("a DCM student switches experts at its boundary, which FlowMatchLCMScheduler cannot do; "
                           "it samples with its own times (FlowConsistencyScheduler)")
    if schedule.get("mu") is not None:
        raise VideoCMError("this student's schedule uses a dynamic shift (mu), whose pipelines pass their own sigmas; "
                           "it samples with its own times (FlowConsistencyScheduler)")
    from diffusers import FlowMatchLCMScheduler

    return FlowMatchLCMScheduler(num_train_timesteps=int(schedule.get("num_train_timesteps", 1000)),
                                 shift=float(schedule["shift"]))


def stock_times(info: ModelInfo, steps: int) -> list[float]:
    """The ``steps`` sampling times (sigmas) :func:`stock_flow_scheduler` gives, in the schedule's time."""
    scheduler = stock_flow_scheduler(info)
    scheduler.set_timesteps(steps)
    return [float(s) for s in scheduler.sigmas[:steps]]


def can_use_stock_times(info: ModelInfo) -> bool:
    """Whether :func:`stock_flow_scheduler` can sample this student (a flow student, one network, static shift)."""
    try:
        stock_flow_scheduler(info)
    except VideoCMError:
        return False
    return True


def export_scheduler(info: ModelInfo, choice: str = "auto"):
    """The exported scheduler: ``own`` (:func:`student_scheduler`: the student's own times, videocm's class for
    flow students), ``stock`` (:func:`stock_flow_scheduler`: diffusers' own class, no videocm needed) or ``auto``
    (stock where it can sample the student, else own)."""
    if choice not in ("auto", "own", "stock"):
        raise VideoCMError(f"--scheduler {choice!r}: use auto, own or stock")
    if choice == "stock" or (choice == "auto" and can_use_stock_times(info)):
        return stock_flow_scheduler(info)
    return student_scheduler(info)


def student_scheduler(info: ModelInfo):
    """The diffusers scheduler that samples this student as ``videocm sample`` does."""
    schedule, consistency = info.schedule, info.consistency
    if consistency.parameterization == "trigflow":
        from .diffusers_classes import TrigFlowConsistencyScheduler

        return TrigFlowConsistencyScheduler(schedule=dict(schedule),
                                            trigflow_sigma_data=float(consistency.trigflow_sigma_data),
                                            sigma_max=float(consistency.sigma_max),
                                            mid_times=[float(m) for m in consistency.mid_times])
    common = {"original_inference_steps": int(consistency.grid_points),
              "timestep_scaling": float(consistency.timestep_scaling)}
    if schedule["type"] == "flow":
        from .diffusers_classes import FlowConsistencyScheduler

        boundaries = [int(b) for b in info.phased.boundaries] if info.is_phased else None
        return FlowConsistencyScheduler(num_train_timesteps=int(schedule.get("num_train_timesteps", 1000)),
                                        shift=float(schedule["shift"]), sigma_data=float(consistency.sigma_data),
                                        mu=float(schedule["mu"]) if schedule.get("mu") is not None else None,
                                        phase_boundaries=boundaries, **common)
    if info.is_phased:  # DDIM jumps above the boundary, consistency steps below: diffusers' LCMScheduler cannot
        from .diffusers_classes import VPPhasedConsistencyScheduler

        vp = {k: v for k, v in schedule.items() if k != "type"}
        return VPPhasedConsistencyScheduler(schedule=vp, original_inference_steps=int(consistency.grid_points),
                                            sigma_data=float(consistency.sigma_data),
                                            timestep_scaling=float(consistency.timestep_scaling),
                                            phase_boundaries=[int(b) for b in info.phased.boundaries])
    if float(schedule.get("snr_shift_scale", 1.0)) != 1.0:
        raise VideoCMError("this student's schedule has CogVideoX's snr_shift_scale, which diffusers' LCMScheduler "
                           "cannot express; sample it with `videocm sample`")
    if float(consistency.sigma_data) != 0.5:
        raise VideoCMError("LCMScheduler fixes sigma_data at 0.5; this student was distilled with "
                           f"{consistency.sigma_data}")
    from diffusers import LCMScheduler

    return LCMScheduler(
        num_train_timesteps=int(schedule.get("num_train_timesteps", 1000)), beta_start=float(schedule["beta_start"]),
        beta_end=float(schedule["beta_end"]), beta_schedule=schedule["beta_schedule"],
        prediction_type=schedule["prediction_type"], rescale_betas_zero_snr=bool(schedule.get("zero_terminal_snr")),
        set_alpha_to_one=bool(schedule.get("set_alpha_to_one", True)), clip_sample=False,
        timestep_spacing="leading", steps_offset=0, **common)


def _check_exportable(model, fmt: str) -> None:
    info = model.info
    if not info.is_student:
        raise VideoCMError(f"{model.path} is a {info.kind}; `videocm export` hands back students")
    if info.guidance_embedded:
        raise VideoCMError("this student takes its guidance scale through a videocm guidance embedding, which no "
                           "diffusers pipeline feeds; distil with a fixed --guidance to export it")
    if fmt == "pipeline" and not info.from_pipeline:
        raise VideoCMError(f"{model.path} was distilled from a videocm teacher (MiniLM text), which no diffusers "
                           f"pipeline runs: use --format model (the denoiser and scheduler alone)")
    if fmt.startswith("lora") and (model.experts is not None or not (Path(model.path) / "lora").is_dir()):
        raise VideoCMError(f"{model.path} holds no LoRA adapter (distil with --student lora); use --format "
                           f"{'pipeline' if info.from_pipeline else 'model'}")


def _denoiser_for_export(model):
    """The network to save: the student's own, or for DCM an ExpertSwitchingModel of its merged experts."""
    if model.experts is None:
        return model.denoiser.network
    import copy

    from ..diffusion import skipping_grid
    from ..diffusion.phased import segment_bounds
    from .diffusers_classes import ExpertSwitchingModel
    from .student import merged_network_state

    info = model.info
    grid_points = int(info.consistency.grid_points)
    grid = skipping_grid(model.schedule, grid_points)
    segments = segment_bounds(info.phased.boundaries, grid_points)
    boundaries = [float(model.schedule.model_timestep(grid[low])) for low, _ in segments[:-1]]
    base = model.experts[0].network
    config = {k: v for k, v in base.config.items() if not k.startswith("_")}
    wrapper = ExpertSwitchingModel(expert_class=type(base).__name__, expert_config=config,
                                   boundary_timesteps=boundaries)
    for target, expert in zip(wrapper.experts, model.experts):
        network = expert.network
        state = merged_network_state(network) if any(".lora_" in k for k in network.state_dict()) else \
            copy.deepcopy(network.state_dict())
        target.load_state_dict(state)
    return wrapper


def _lora_state(model, layout: str = "lora") -> dict[str, torch.Tensor]:
    """The peft adapter of ``lora/`` under the names diffusers' ``load_lora_weights`` expects (``lora``: its
    scale folded into the up matrices) or in the family's original layout (``lora-original``: with alphas)."""
    from safetensors.torch import load_file

    folder = Path(model.path) / "lora"
    weights = load_file(str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    rank, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise VideoCMError(f"{folder} has per-module ranks or alphas, which this export does not write")
    spec = get_family(model.info.family)
    if layout == "lora-original":
        return spec.original_lora_state(weights, alpha)
    scale = alpha / rank
    return {f"{spec.subfolder}.{name}": value * scale if ".lora_B." in name else value
            for name, value in weights.items()}


def export_student(student: str | Path, out: str | Path, fmt: str | None = None, copy: bool = False,
                   dtype: str = "float32", decoder: str | None = None, scheduler: str = "own") -> Path:
    """Write ``student`` to ``out`` in ``fmt`` (see the module docstring); returns ``out``. ``decoder``
    (``tiny`` or a decoder folder, :func:`models.tiny_decoder.resolve_decoder`) adds a tiny decoder as the
    separate component ``tiny_decoder/`` (a diffusers ``AutoencoderTiny``), described in ``HOW_TO_USE.md``."""
    student, out = Path(student), Path(out)
    info = ModelInfo.load(student)
    fmt = fmt or ("pipeline" if info.from_pipeline else "model")
    if fmt not in FORMATS:
        raise VideoCMError(f"export format {fmt!r} is not known: use one of {', '.join(FORMATS)}")
    if dtype not in STORE_DTYPES:
        raise VideoCMError(f"storage dtype {dtype!r} is not known: use one of {', '.join(STORE_DTYPES)}")
    if out.exists() and any(out.iterdir()):
        raise VideoCMError(f"{out} exists and is not empty: export into a new folder")
    model = load_model(student, "cpu")
    _check_exportable(model, fmt)
    tiny = None
    if decoder is not None and decoder != "full":
        from .tiny_decoder import resolve_decoder

        tiny = resolve_decoder(decoder, model)  # refused here, before anything is written, if made for another VAE
    out.mkdir(parents=True, exist_ok=True)
    if tiny is not None:
        tiny.autoencoder.save_pretrained(out / TINY_DECODER_PART)
    scheduler = export_scheduler(info, scheduler)
    scheduler.save_pretrained(out / "scheduler")
    part = get_family(info.family).subfolder
    if fmt.startswith("lora"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in _lora_state(model, fmt).items()}, str(out / LORA_FILES[fmt]))
    elif two_transformers(info, model) and fmt == "pipeline":
        # a DCM student of a Wan 2.2 two-expert teacher: the stock layout, the pipeline switching at the boundary
        for name, network in zip((part, get_family(info.family).second_subfolder), _merged_experts(model)):
            cast_for_storage(network, STORE_DTYPES[dtype]).save_pretrained(out / name)
    else:
        network = _denoiser_for_export(model)
        cast_for_storage(network, STORE_DTYPES[dtype])
        network.save_pretrained(out / part)
    if fmt == "pipeline":
        ratio = student_boundary_ratio(info) if two_transformers(info, model) else None
        _write_pipeline(Path(info.pipeline), out, part, type(scheduler).__name__,
                        model.experts is not None and ratio is None, copy, ratio)
    switching = model.experts is not None and not (fmt == "pipeline" and two_transformers(info, model))
    guide = usage(info, fmt, out, type(scheduler).__name__, switching)
    if tiny is not None:
        guide += tiny_decoder_usage(out, tiny.temporal_factor)
    (out / USAGE_FILE).write_text(guide)
    if fmt != "model":
        (out / CALL_FILE).write_text(json.dumps(call_arguments(info), indent=2))
    return out


def two_transformers(info: ModelInfo, model) -> bool:
    """Whether a student exports as Wan 2.2's two-transformer layout: a two-phase DCM student of a two-expert
    teacher."""
    return (info.boundary_ratio is not None and model.experts is not None and len(model.experts) == 2
            and get_family(info.family).second_subfolder is not None)


def student_boundary_ratio(info: ModelInfo) -> float:
    """The ``boundary_ratio`` at which the pipeline hands the student's timesteps to its second transformer: half
    way between the boundary grid point (the detail expert's highest) and the next one up (the semantic
    expert's lowest), as a fraction of the training timesteps."""
    from ..diffusion import skipping_grid
    from .folder import schedule_from_config

    schedule = schedule_from_config(info.schedule)
    grid = skipping_grid(schedule, int(info.consistency.grid_points))
    b = int(info.phased.boundaries[0])
    middle = float(schedule.model_timestep(grid[b:b + 2]).mean())
    return middle / int(info.schedule.get("num_train_timesteps", 1000))


def _merged_experts(model) -> list:
    """Each expert as a plain network of the base's class, any LoRA merged in (copies)."""
    import copy

    from .student import merged_network_state

    networks = []
    for expert in model.experts:
        lora = any(".lora_" in k for k in expert.network.state_dict())
        network = copy.deepcopy(model.denoiser.network)
        network.load_state_dict(merged_network_state(expert.network) if lora else expert.network.state_dict())
        networks.append(network)
    return networks


def _write_pipeline(teacher: Path, out: Path, part: str, scheduler_class: str, phased: bool, copy: bool,
                    boundary_ratio: float | None = None) -> None:
    """``model_index.json`` of the teacher with the student's denoiser and scheduler; other parts linked or copied
    (``boundary_ratio``: the student's two transformers, Wan 2.2's layout)."""
    index = json.loads((teacher / "model_index.json").read_text())
    spec = family_for_pipeline(index.get("_class_name"))
    for name, entry in index.items():
        if (name.startswith("_") or not isinstance(entry, list) or entry[0] is None
                or name in (part, "scheduler", spec.second_subfolder)):
            continue
        source, target = teacher / name, out / name
        if copy:
            shutil.copytree(source, target)
        else:
            target.symlink_to(source.resolve(), target_is_directory=True)
    index = spec.export_index(index)  # one student network where the teacher had two
    index["scheduler"] = ["videocm" if scheduler_class in VIDEOCM_SCHEDULERS else "diffusers", scheduler_class]
    if phased:
        index[part] = ["videocm", "ExpertSwitchingModel"]
    if boundary_ratio is not None:
        index[spec.second_subfolder] = list(index[part])
        index["boundary_ratio"] = boundary_ratio
    (out / "model_index.json").write_text(json.dumps(index, indent=2))


CALL_FILE = "call_arguments.json"
VIDEOCM_SCHEDULERS = ("FlowConsistencyScheduler", "VPPhasedConsistencyScheduler", "TrigFlowConsistencyScheduler")


def call_arguments(info: ModelInfo) -> dict:
    """The keyword arguments of the exported pipeline's call that reproduce ``videocm sample`` with this student
    (steps, guidance, clip shape, text length), limited to those the pipeline class takes."""
    import inspect

    import diffusers

    spec = get_family(info.family)
    frames, height, width = info.video_shape
    wanted = {"num_inference_steps": int(info.default_steps or 4),
              "guidance_scale": spec.export_guidance(info.embedded_guidance),
              "num_frames": int(frames), "height": int(height), "width": int(width),
              "max_sequence_length": int(info.max_sequence_length) if info.max_sequence_length else None,
              **spec.export_call_arguments(info)}
    pipeline_class = getattr(diffusers, info.pipeline_class or spec.pipeline.class_name, None)
    accepted = inspect.signature(pipeline_class.__call__).parameters if pipeline_class else wanted
    return {k: v for k, v in wanted.items() if k in accepted and v is not None}


def usage(info: ModelInfo, fmt: str, out: Path, scheduler_class: str, phased: bool) -> str:
    """A short guide written beside the export: how to run it in diffusers. Its Python block runs as written
    (tests execute it): one fenced block, the prompt ``"your prompt"``, ``num_inference_steps=N``,
    ``torch.Generator().manual_seed(S)``, the frames in ``video``."""
    arguments = call_arguments(info) if fmt != "model" else {}
    steps = arguments.get("num_inference_steps", int(info.default_steps or 4))
    spec = get_family(info.family)
    flow = scheduler_class in VIDEOCM_SCHEDULERS  # videocm's own schedulers (flow students, VP DCM students)
    lines = [f"# Using this videocm export ({fmt})", "",
             f"Student of `{info.teacher}` ({info.method}, {info.family}); sample in {steps} steps.", ""]
    if fmt != "model":
        needs_videocm = flow or phased
        lines += ["```python", "import torch"]
        if needs_videocm:
            lines.append("import videocm  # noqa: F401 - registers videocm's classes with diffusers")
        lines += ["from diffusers import DiffusionPipeline"] + (["from PIL import Image"] if info.image_condition
                                                                 else []) + [""]
        if fmt == "pipeline":
            lines.append(f'pipe = DiffusionPipeline.from_pretrained("{out}")')
        else:
            lines += [f'pipe = DiffusionPipeline.from_pretrained("{info.pipeline}")  # the teacher pipeline',
                      f'pipe.load_lora_weights("{out}"'
                      + (f', weight_name="{LORA_FILES[fmt]}")' if fmt == "lora-original" else ")"),
                      f'pipe.scheduler = {"videocm" if flow else "diffusers"}.{scheduler_class}.from_pretrained('
                      f'"{out}", subfolder="scheduler")']
            if not flow:
                lines.insert(lines.index("from diffusers import DiffusionPipeline"), "import diffusers")
        lines.append("generator = torch.Generator().manual_seed(0)")
        if scheduler_class == "FlowMatchLCMScheduler":
            lines.append("torch.manual_seed(0)  # the stock scheduler re-noises from torch's global generator")
        if flow:
            lines.append("pipe.scheduler.generator = generator  # re-noising noise (pipelines do not pass theirs)")
        if arguments.get("guidance_scale") == 1.0:
            lines.append("# guidance is folded into the student: guidance_scale=1.0 skips the unconditional pass")
        if info.image_condition:  # image to video: the first frame, of the clip size
            lines.append(f'image = Image.open("first_frame.png").convert("RGB")  # {arguments.get("width")}x'
                         f'{arguments.get("height")}, the first frame of the clip')
            lines.append('video = pipe(image=image, prompt="your prompt",')
        else:
            lines.append('video = pipe("your prompt",')
        lines += [f"             {key}={value!r}," for key, value in arguments.items()]
        lines += ["             generator=generator).frames[0]", "```", "",
                  f"These are the arguments the student was distilled with (also in `{CALL_FILE}`)."]
        if phased:
            lines += ["", "The denoiser is a `videocm.ExpertSwitchingModel` (DCM's experts, switched by timestep): "
                      "`pip install videocm` where the pipeline runs."]
    else:
        lines += [f"`{spec.subfolder}/` is a diffusers `{spec.network_class}`"
                  f"{' wrapped in videocm.ExpertSwitchingModel' if phased else ''}; `scheduler/` its "
                  f"`{scheduler_class}`."]
    if flow:
        lines += ["", f"`{scheduler_class}` comes from videocm (`pip install videocm`)."]
        if scheduler_class == "TrigFlowConsistencyScheduler":
            lines += [f"It runs the sCM sampler at this student's TrigFlow times (1 to "
                      f"{len(info.consistency.mid_times) + 1} steps). Why not diffusers' own `SCMScheduler`: it "
                      f"takes TrigFlow inputs and outputs, while this network keeps its teacher's inputs and "
                      f"prediction, so a stock pipeline cannot feed it."]
        if scheduler_class == "FlowConsistencyScheduler" and not phased:
            lines += ["Why not diffusers' own `FlowMatchLCMScheduler`: it spaces N steps down to sigma 0.001, where a "
                      "consistency step changes nothing, so at 2 steps it gives this student's 1-step clip (at 4 and 8 "
                      "steps it ties; videocm's docs/reports/stock-times). `videocm export --scheduler stock` writes "
                      "that scheduler instead, for an export that needs no videocm."]
    if scheduler_class == "FlowMatchLCMScheduler":
        lines += ["", "The scheduler is diffusers' own `FlowMatchLCMScheduler` (no videocm needed). Its times run "
                  "from 1 to about 0, where the student's own end at its grid's 1/N: `videocm sample --times stock` "
                  "samples as this export does, `--times own` as the student was distilled "
                  "(`videocm export --scheduler own` exports those, with videocm's scheduler)."]
    return "\n".join(lines) + "\n"


def tiny_decoder_usage(out: Path, temporal_factor: int) -> str:
    """The ``HOW_TO_USE.md`` section on the exported tiny decoder (prose: the guide's one code block stays the
    pipeline's)."""
    frames = ("one frame per latent frame" if temporal_factor == 1 else
              f"{temporal_factor} frames per latent frame, read from its {3 * temporal_factor} channels as "
              f"(frame, RGB), of which the first latent frame keeps only the last")
    return (
        f"\n## Faster decoding: `{TINY_DECODER_PART}/`\n\n"
        f"`{TINY_DECODER_PART}/` is a diffusers `AutoencoderTiny` distilled from this model's VAE decoder "
        f"(`videocm distill-decoder`); it is not part of the pipeline (`model_index.json` does not list it), so "
        f"the pipeline decodes with its own VAE unless you decode yourself. Load it with "
        f'`AutoencoderTiny.from_pretrained("{out / TINY_DECODER_PART}")` and call its `decode` on each latent '
        f"frame of the VAE-normalised latents (the pipeline's `output_type=\"latent\"` result, in the "
        f"pipeline's own layout: `(B, C, T, h, w)` for Wan and HunyuanVideo, `(B, T, C, h, w)` for CogVideoX): "
        f"`tiny.decode(latents.transpose(1, 2).flatten(0, 1)).sample` gives {frames}, in [-1, 1]. Its encoder "
        f"is untrained: encode with the VAE. `videocm sample --decoder DIR` does all of this.\n")
