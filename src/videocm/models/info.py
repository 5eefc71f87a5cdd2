"""``ModelInfo``: the typed, versioned description of a videocm folder (``videocm.json``), and its only reader and
writer.

Every folder videocm writes (teacher, student, VAE, control branch) holds ``videocm.json``; :meth:`ModelInfo.load`
reads it, migrating older versions, and :meth:`ModelInfo.save` writes it. The JSON keys are an interface (scripts
read them): each field below is one top-level key, and the nested sections (``guidance``, ``consistency``,
``phased``) keep their keys. Keys this version does not know are kept as they are in ``extra`` and written back.

Versions:

* 1 (videocm 0.1, the folders under ``models/``): the same keys, with some left out where readers assumed a
  default (``default_guidance`` 1, ``default_steps`` 50, ``text_max_length`` 16, ``negative_prompt`` "").
* 2: every default written out. :func:`migrate` turns version 1 into 2; a newer version is refused in one line.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VideoCMError

INFO_FILE = "videocm.json"
FORMAT = "videocm"
VERSION = 2
KINDS = ("teacher", "student", "vae", "control", "decoder")


@dataclass
class GuidanceInfo:
    """How a student takes classifier-free guidance: folded in at ``scale`` (``fixed``), or an input over
    ``range`` with ``default`` (``embedded``, a guidance embedding)."""

    mode: str = "fixed"
    scale: float | None = None
    scale_2: float | None = None  # Wan 2.2 two-expert teachers: the scale folded in at the low-noise expert's steps
    range: list[float] | None = None
    default: float | None = None


@dataclass
class ConsistencyInfo:
    """The student's skipping grid, its boundary-condition scalings and the target it was distilled against."""

    grid_points: int = 50
    skip: int = 1
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    target: str = "ema"
    # lcm: c_skip x + c_out x0_hat on the grid (LCM, DCM, DMD); trigflow: the network's clean estimate in continuous
    # TrigFlow time (sCM), sampled from atan(sigma_max / trigflow_sigma_data) through mid_times
    parameterization: str = "lcm"
    trigflow_sigma_data: float = 1.0
    sigma_max: float = 80.0
    mid_times: list[float] = field(default_factory=lambda: [1.5, 1.4, 1.0])


@dataclass
class PhasedInfo:
    """A phased (DCM) student: ``phases`` experts split at inner grid indices ``boundaries`` (times beside)."""

    phases: int = 2
    boundaries: list[int] = field(default_factory=list)
    boundary_times: list[float] = field(default_factory=list)
    experts: list[str] = field(default_factory=list)


TRIGFLOW_KEYS = ("parameterization", "trigflow_sigma_data", "sigma_max", "mid_times")
_SECTIONS = {"guidance": GuidanceInfo, "consistency": ConsistencyInfo, "phased": PhasedInfo}


@dataclass
class ModelInfo:
    """What a folder is. ``kind``: teacher, student, vae, control or decoder (a tiny decoder); shapes are
    ``[C, T, h, w]`` latents and ``[T, H, W]`` clips; ``schedule`` is the noise schedule's config (see :func:`models.folder.schedule_from_config`).
    """

    kind: str
    family: str | None = None
    schedule: dict | None = None
    prediction_type: str | None = None
    latent_shape: list[int] | None = None
    video_shape: list[int] | None = None
    # text: videocm's MiniLM (``text_encoder``, ``text_max_length``) or a diffusers pipeline's (``pipeline``)
    text_encoder: str | None = None
    text_max_length: int | None = None
    max_sequence_length: int | None = None
    default_guidance: float | None = None  # teachers and students: the guidance and steps they sample with
    default_steps: int | None = None
    embedded_guidance: float | None = None  # the scale a guidance-distilled network takes itself (HunyuanVideo)
    # diffusers pipeline teachers and their students: the pipeline folder the text encoder and VAE come from
    source: str | None = None
    pipeline: str | None = None
    pipeline_class: str | None = None
    boundary_ratio: float | None = None  # a Wan 2.2 two-expert teacher: where its pipeline switches transformer
    image_condition: str | None = None  # image-to-video: how a first frame conditions it (PipelineLayout)
    # fixed keyword arguments of every network call that the pipeline makes (LTX-Video's rope_interpolation_scale)
    network_options: dict | None = None
    # provenance
    dataset: str | None = None
    vae_from: str | None = None
    teacher: str | None = None
    # students
    method: str | None = None
    student: str | None = None  # "full" or "lora"
    negative_prompt: str = ""
    guidance: GuidanceInfo | None = None
    consistency: ConsistencyInfo | None = None
    phased: PhasedInfo | None = None
    # VAE folders
    latent_channels: int | None = None
    spatial_factor: int | None = None
    # control branches
    control_blocks: int | None = None
    control_encoding: str | None = None
    fine_tuned_for: str | None = None
    fine_tuned_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer writer, kept as they are

    # ---- what readers ask -----------------------------------------------------------------------------------

    @property
    def is_student(self) -> bool:
        return self.kind == "student"

    @property
    def is_phased(self) -> bool:
        return self.phased is not None

    @property
    def guidance_embedded(self) -> bool:
        return self.guidance is not None and self.guidance.mode == "embedded"

    @property
    def text_length(self) -> int:
        """Text tokens: the pipeline's ``max_sequence_length``, else MiniLM's ``text_max_length``."""
        return int(self.max_sequence_length or self.text_max_length or 16)

    @property
    def from_pipeline(self) -> bool:
        """A diffusers pipeline teacher or its student: text encoder and VAE come from ``pipeline``."""
        return self.pipeline is not None

    def replace(self, **changes) -> "ModelInfo":
        return dataclasses.replace(self, **changes)

    # ---- JSON ----------------------------------------------------------------------------------------------

    def to_dict(self, subfolder: str | None = None) -> dict:
        """The JSON object of ``videocm.json`` (``subfolder``: where the folder keeps its network)."""
        result: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": self.kind}
        if self.family is not None:
            result["family"] = self.family
        if subfolder is not None:
            result["subfolder"] = subfolder
        for item in dataclasses.fields(self):
            if item.name in ("kind", "family", "extra"):
                continue
            value = getattr(self, item.name)
            if value is None:
                continue
            result[item.name] = _plain(dataclasses.asdict(value)) if dataclasses.is_dataclass(value) else value
        consistency = result.get("consistency")
        if consistency is not None and consistency.get("parameterization") == "lcm":
            for key in TRIGFLOW_KEYS:  # written for continuous-time (sCM, rCM) students only
                consistency.pop(key, None)
        result.update(self.extra)
        return result

    @classmethod
    def from_dict(cls, values: dict, where: str = INFO_FILE) -> "ModelInfo":
        """A :class:`ModelInfo` from a ``videocm.json`` object of any version this videocm reads."""
        values = migrate(dict(values), where)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        arguments: dict[str, Any] = {"extra": {}}
        for key, value in values.items():
            if key in ("format", "version", "subfolder"):
                continue
            if key in _SECTIONS and isinstance(value, dict):
                section = _SECTIONS[key]
                names = {f.name for f in dataclasses.fields(section)}
                value = section(**{k: v for k, v in value.items() if k in names})
            if key in known:
                arguments[key] = value
            else:
                arguments["extra"][key] = value
        if arguments.get("kind") not in KINDS:
            raise VideoCMError(f"{where} names kind {arguments.get('kind')!r}; videocm folders are one of "
                               f"{', '.join(KINDS)}")
        return cls(**arguments)

    @classmethod
    def load(cls, folder: str | Path) -> "ModelInfo":
        """The description of ``folder``; one-line errors for a missing folder, file, bad JSON or newer version."""
        folder = Path(folder)
        if not folder.is_dir():
            raise VideoCMError(f"model folder {folder} does not exist")
        path = folder / INFO_FILE
        if not path.is_file():
            raise VideoCMError(f"{folder} is not a videocm model folder: it has no {INFO_FILE}")
        return cls.from_dict(read_json_object(path), str(path))

    def save(self, folder: str | Path, subfolder: str | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / INFO_FILE
        path.write_text(json.dumps(self.to_dict(subfolder), indent=2))
        return path


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path`` (a description, a pipeline's ``model_index.json``), or a one-line error."""
    try:
        values = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise VideoCMError(f"{path} is not valid JSON ({error.msg}, line {error.lineno})") from error
    if not isinstance(values, dict):
        raise VideoCMError(f"{path} must hold a JSON object")
    return values


def is_model_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``videocm.json``."""
    return (Path(folder) / INFO_FILE).is_file()


def migrate(values: dict, where: str = INFO_FILE) -> dict:
    """A ``videocm.json`` object of any readable version as the current version."""
    if values.get("format", FORMAT) != FORMAT:
        raise VideoCMError(f"{where} is a {values.get('format')!r} file, not a videocm model description")
    version = values.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise VideoCMError(f"{where} has version {version!r}; videocm reads versions 1 to {VERSION}")
    if version > VERSION:
        raise VideoCMError(f"{where} was written by a newer videocm (format version {version}; this one reads up to "
                           f"{VERSION}): upgrade videocm to load it")
    if version == 1:
        values = _migrate_1_to_2(values)
    return values


def _migrate_1_to_2(values: dict) -> dict:
    """Version 1 left some keys out where every reader assumed the same default; version 2 writes them."""
    values = dict(values)
    if values.get("kind") in ("teacher", "student"):
        values.setdefault("default_guidance", 1.0)
        values.setdefault("default_steps", 50)
        if "pipeline" not in values:
            values.setdefault("text_max_length", 16)
    if values.get("kind") == "student":
        values.setdefault("negative_prompt", "")
        values.setdefault("guidance", {"mode": "fixed", "scale": values.get("default_guidance", 1.0)})
    values["version"] = VERSION
    return values


def _plain(value):
    """``asdict`` output without the keys a section leaves unset (None)."""
    return {k: v for k, v in value.items() if v is not None}


# ---- the noise schedule of a description ------------------------------------------------------------------------

def schedule_to_config(schedule, **vp_arguments) -> dict:
    """The ``schedule`` section of a description for a :mod:`diffusion.schedules` schedule."""
    from ..diffusion import FlowSchedule

    if isinstance(schedule, FlowSchedule):
        return {"type": "flow", "shift": schedule.shift, "num_train_timesteps": schedule.num_train_timesteps,
                **({"mu": schedule.mu} if schedule.mu is not None else {})}
    return {"type": "vp", "prediction_type": schedule.prediction_type,
            "timestep_spacing": schedule.timestep_spacing, **vp_arguments}


def schedule_from_config(config: dict):
    """The schedule a ``schedule`` section describes (``type`` flow or vp, then the schedule's arguments)."""
    from ..diffusion import FlowSchedule, vp_schedule

    config = dict(config)
    kind = config.pop("type", None)
    if kind == "flow":
        return FlowSchedule(shift=float(config.get("shift", 1.0)),
                            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
                            mu=float(config["mu"]) if config.get("mu") is not None else None)
    if kind == "vp":
        return vp_schedule(**config)
    raise VideoCMError(f"schedule type {kind!r} is unknown: use 'flow' or 'vp'")
