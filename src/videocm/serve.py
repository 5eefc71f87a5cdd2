"""``videocm serve``: a web page (Gradio) for trying models, teacher and student side by side.

A prompt (MovingDigits examples), a teacher and a student with their steps, guidance and seed, the student's
decoder, and for models with a control branch an optional control video. Both clips play in the page with their
seconds, network evaluations and steps under them, and the speed-up. The models stay loaded between requests
(the first request of each model pays its loading), requests wait in Gradio's queue, and bad input is a message
in the page, not a traceback.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from .config import Count, DeviceName, Range
from .errors import VideoCMError

SHIPPED = ("teacher-flow", "lcm-flow", "dcm-flow", "teacher-vp", "lcm-vp", "dcm-vp")
EXAMPLES = ["a red 3 moving left", "a blue 7 moving up", "a green 0 moving right", "a yellow 5 moving down"]


Port = Annotated[int, Range(1, 65535)]


@dataclass
class ServeConfig:
    """``videocm serve``: the web page, on http://HOST:PORT."""

    model: list[str] = field(default_factory=list, metadata={"repeat": True})  # teacher, student or control folders (repeat; default: the shipped ones in --models-dir)
    models_dir: str | None = None  # folder of the shipped models (default: $VIDEOCM_MODELS, else ./models)
    host: str = "127.0.0.1"  # address to listen on (0.0.0.0: every interface)
    port: Port = 7860  # port to listen on (1-65535)
    decoder: str = "full"  # the students' default decoder: full (their VAE) or tiny (the page can switch it)
    max_steps: Count = 100  # the largest step count the page accepts
    concurrency: Count = 2  # requests generated at once (more wait in the queue)
    device: DeviceName | None = None  # cpu or cuda (default: cuda when available)


@dataclass
class Catalogue:
    """The models the page offers, by name: teachers, students and control branches."""

    teachers: dict[str, Path]
    students: dict[str, Path]
    controls: dict[str, Path]

    @classmethod
    def find(cls, folders: list[str], models_dir: str | None = None) -> "Catalogue":
        from .locations import models_dir as shipped_models
        from .models.info import ModelInfo, is_model_folder

        if not folders:
            root = shipped_models(models_dir)
            folders = [str(root / name) for name in SHIPPED if (root / name).is_dir()]
            folders += [str(path) for path in sorted(root.glob("control-*")) if path.is_dir()]
        found = cls({}, {}, {})
        for folder in map(Path, folders):
            if not is_model_folder(folder):
                raise VideoCMError(f"--model {folder} is not a videocm model folder (no videocm.json)")
            kind = ModelInfo.load(folder).kind
            shelf = {"teacher": found.teachers, "student": found.students, "control": found.controls}.get(kind)
            if shelf is None:
                raise VideoCMError(f"--model {folder} is a {kind} folder; serve takes teachers, students and control "
                                   f"branches")
            shelf[folder.name] = folder
        if not found.teachers or not found.students:
            raise VideoCMError("serve needs at least one teacher and one student: give --model DIR for each (or "
                               "--models-dir DIR holding the shipped ones)")
        return found


class Models:
    """Loaded pipelines kept warm, one per (model, decoder, control), each with a lock (a pipeline serves one
    request at a time; different models run side by side)."""

    def __init__(self, catalogue: Catalogue, device: str, models_dir: str | None) -> None:
        self.catalogue, self.device, self.models_dir = catalogue, device, models_dir
        self._pipelines: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def get(self, name: str, decoder: str = "full", control: str | None = None):
        folder = self.catalogue.teachers.get(name) or self.catalogue.students.get(name)
        if folder is None:
            raise VideoCMError(f"unknown model {name!r}: choose one of "
                               f"{', '.join([*self.catalogue.teachers, *self.catalogue.students])}")
        key = (name, decoder, control)
        with self._lock:
            if key not in self._pipelines:
                from .models.folder import load_model
                from .pipeline import VideoPipeline

                pipeline = VideoPipeline(load_model(folder, self.device), self.device)
                pipeline.use_decoder(decoder, self.models_dir)
                if control is not None:
                    from .models.control import load_control

                    branch, _ = load_control(self.catalogue.controls[control], self.device)
                    pipeline.use_control(branch)
                self._pipelines[key] = (pipeline, threading.Lock())
            return self._pipelines[key]


@dataclass
class Clip:
    """One generated clip: the file the page plays and what it cost."""

    path: Path
    seconds: float
    nfe: float
    steps: int

    def caption(self, name: str) -> str:
        return f"**{name}**: {self.seconds:.2f} s, {self.nfe:g} network evaluations, {self.steps} steps"


def generate_clip(models: Models, name: str, prompt: str, steps: int, guidance: float | None, seed: int,
                  decoder: str, control: str | None, control_file: str | None, folder: Path) -> Clip:
    """Generate one clip with model ``name`` (checked inputs) into ``folder`` as a WebM the page plays."""
    from .data.clip_folder import write_clip
    from .evaluation.cost import CostMeter

    pipeline, lock = models.get(name, decoder, control)
    controls = None
    if control is not None:
        from .models.control import read_control

        if not control_file:
            raise VideoCMError(f"the control branch {control} needs a control video: upload a silhouette (.npy, "
                               f".gif or .mp4), or choose no control")
        controls = [read_control(control_file, tuple(pipeline.model.info.video_shape))]
    meter = CostMeter()
    with lock:
        began = time.perf_counter()
        clip = pipeline.generate([prompt], [seed], steps, guidance, meter, controls=controls, progress=True)[0]
        seconds = time.perf_counter() - began
    path = write_clip(folder / f"{name}-{seed}-{time.monotonic_ns()}", clip, "webm")
    return Clip(path, seconds, meter.network_rows, steps)


def checked_request(catalogue: Catalogue, config: ServeConfig, prompt: str, teacher: str, student: str,
                    teacher_steps, student_steps, guidance, seed) -> tuple[str, int, int, float | None, int]:
    """The request's inputs, or a one-line :class:`VideoCMError` saying what is wrong and how to fix it."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise VideoCMError("the prompt is empty: type one, e.g. 'a red 3 moving left'")
    for name, shelf, kind in ((teacher, catalogue.teachers, "teacher"), (student, catalogue.students, "student")):
        if name not in shelf:
            raise VideoCMError(f"unknown {kind} {name!r}: choose one of {', '.join(shelf)}")
    counts = []
    for label, value in (("teacher steps", teacher_steps), ("student steps", student_steps)):
        if value is None or float(value) != int(float(value)) or not 1 <= int(float(value)) <= config.max_steps:
            raise VideoCMError(f"{label} must be a whole number from 1 to {config.max_steps}, got {value}")
        counts.append(int(float(value)))
    if guidance is not None and not 0 <= float(guidance) <= 30:
        raise VideoCMError(f"guidance must be from 0 to 30, got {guidance}")
    if seed is None or float(seed) != int(float(seed)) or int(float(seed)) < 0:
        raise VideoCMError(f"the seed must be a whole number from 0 on, got {seed}")
    return prompt, counts[0], counts[1], None if guidance is None else float(guidance), int(float(seed))


def build_app(config: ServeConfig):
    """The Gradio Blocks app (not yet launched)."""
    catalogue = Catalogue.find(config.model, config.models_dir)  # bad --model is refused before gradio loads
    import gradio as gr
    import torch

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = Models(catalogue, device, config.models_dir)
    folder = Path(tempfile.mkdtemp(prefix="videocm-serve-"))
    teachers, students = list(catalogue.teachers), list(catalogue.students)

    def default_guidance(name: str) -> float:
        from .models.info import ModelInfo

        info = ModelInfo.load(catalogue.teachers[name]) if name in catalogue.teachers else None
        return float(info.default_guidance if info is not None and info.default_guidance is not None else 1.0)

    def run(prompt, teacher, student, teacher_steps, student_steps, guidance, seed, decoder, control, control_file,
            progress=gr.Progress(track_tqdm=True)):
        try:
            prompt, teacher_count, student_count, guidance, seed = checked_request(
                catalogue, config, prompt, teacher, student, teacher_steps, student_steps, guidance, seed)
            control = None if control in (None, "none") else control
            progress(0, desc=f"{teacher}: {teacher_count} steps")
            first = generate_clip(models, teacher, prompt, teacher_count, guidance, seed, "full", control,
                                  control_file, folder)
            progress(0.5, desc=f"{student}: {student_count} steps")
            second = generate_clip(models, student, prompt, student_count, None, seed, decoder, control,
                                   control_file, folder)
        except VideoCMError as error:
            raise gr.Error(str(error), print_exception=False) from None
        speedup = first.seconds / max(second.seconds, 1e-9)
        summary = (f"**Speed-up: {speedup:.1f}x** ({first.seconds:.2f} s against {second.seconds:.2f} s; "
                   f"{first.nfe:g} against {second.nfe:g} network evaluations). Models stay loaded: the first "
                   f"request of a model also pays its loading.")
        return str(first.path), first.caption(teacher), str(second.path), second.caption(student), summary

    with gr.Blocks(title="videocm", analytics_enabled=False) as app:
        gr.Markdown("# videocm: teacher and few-step student, side by side")
        with gr.Row():
            prompt = gr.Textbox(label="prompt", value=EXAMPLES[0], elem_id="prompt", scale=3)
            seed = gr.Number(label="seed", value=0, precision=0, elem_id="seed")
        gr.Examples(EXAMPLES, inputs=[prompt], label="MovingDigits captions")
        with gr.Row():
            with gr.Column():
                teacher = gr.Dropdown(teachers, value=teachers[0], label="teacher", elem_id="teacher")
                teacher_steps = gr.Number(label="teacher steps", value=50, precision=0, elem_id="teacher-steps")
                guidance = gr.Number(label="teacher guidance", value=default_guidance(teachers[0]), elem_id="guidance")
            with gr.Column():
                student = gr.Dropdown(students, value=students[0], label="student", elem_id="student")
                student_steps = gr.Number(label="student steps", value=4, precision=0, elem_id="student-steps")
                decoder = gr.Radio(["full", "tiny"], value=config.decoder, label="student decoder")
        with gr.Accordion("control (models with a control branch)", open=False):
            control = gr.Dropdown(["none", *catalogue.controls], value="none", label="control branch")
            control_file = gr.File(label="control video: a silhouette .npy, .gif or .mp4", type="filepath")
        button = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Row():
            with gr.Column():
                teacher_video = gr.Video(label="teacher", elem_id="teacher-video", autoplay=True, loop=True, height=300)
                teacher_caption = gr.Markdown(elem_id="teacher-caption")
            with gr.Column():
                student_video = gr.Video(label="student", elem_id="student-video", autoplay=True, loop=True, height=300)
                student_caption = gr.Markdown(elem_id="student-caption")
        summary = gr.Markdown(elem_id="summary")
        teacher.change(default_guidance, [teacher], [guidance])  # each teacher's own guidance, until changed
        button.click(run, [prompt, teacher, student, teacher_steps, student_steps, guidance, seed, decoder, control,
                           control_file],
                     [teacher_video, teacher_caption, student_video, student_caption, summary],
                     concurrency_limit=config.concurrency)
    app.queue(default_concurrency_limit=config.concurrency)
    return app


def refuse_busy_port(host: str, port: int) -> None:
    """A one-line error, before any model loads, when ``host:port`` cannot be listened on (in use, or no such
    address), instead of the web server's traceback after the page's address was printed."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as error:
        reason, other = error.strerror or str(error), port + 1 if port < 65535 else 7860
        raise VideoCMError(f"cannot listen on {host}:{port} ({reason}): pass a free --port (e.g. --port {other}) or "
                           f"stop what listens there; --host must be an address of this machine") from None


def run_serve(config: ServeConfig) -> int:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    refuse_busy_port(config.host, config.port)
    app = build_app(config)
    print(f"videocm serve: http://{config.host}:{config.port} (Ctrl+C stops it)", flush=True)
    app.launch(server_name=config.host, server_port=config.port, ssr_mode=False, quiet=True, footer_links=[],
               show_error=True)
    return 0
