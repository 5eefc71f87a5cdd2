"""``videocm plan``: the memory and time of a distillation run, per GPU and per parallel mode, before it runs.

The teacher's denoiser is built from its config on the meta device (no weights, no memory), and one forward of a
clip of the requested shape runs there: torch's ``FlopCounterMode`` counts its FLOPs and saved-tensor hooks count
the bytes autograd keeps for the backward, attributed to the block that saved them. From these, per GPU:

* weights: the float32 student (its master weights), its gradients and AdamW's two moments for the trainable
  part, the EMA consistency target (a float32 copy of the student), the frozen teacher (bf16 on a GPU);
  ``--parallel fsdp`` divides each by the number of GPUs and adds two gathered blocks (the one computing, the
  one prefetched);
* activations per clip: the saved bytes, or with ``--gradient-checkpointing`` each block's input plus the largest
  block's saved bytes (it is recomputed in the backward); context parallelism of degree c splits them c ways;
  DCM's detail stage adds the teacher's forward with autograd on real and fake clips (its discriminator features);
* the largest batch that fits the GPU's memory less a reserve (CUDA context, allocator slack);
* sCM / rCM (``--method scm|rcm``): no EMA target; the forward-mode JVP's attention on PyTorch's math kernel holds
  a score matrix and its softmax with their tangents (4 x heads x queries x keys per clip, one attention at a
  time), which context parallelism divides; rCM adds its trained fake score (a full float32 copy);
* time per step: the measured cost of an LCM step in forwards (``benchmarks/wan_1p3b_estimate.py``: 5.8 on this
  CPU, theory 6; checkpointing adds one forward) times the counted FLOPs, over the GPUs' assumed throughput.

It names the fastest mode that fits. The figures are an estimate; ``benchmarks/plan_check.py`` compares them with
measured peaks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..config import Count, Fraction, Natural, NonNegative, OutputPath, PlannedDevice, Positive, check_values
from ..errors import VideoCMError
from ..models.experts import DETAIL_LORA_TARGETS, _is_own
from ..models.families import FamilySpec, family_for_network, family_for_pipeline, get_family
from ..models.info import ModelInfo, is_model_folder

GIB = 2**30
# the CPU process before any weights: Python with torch, diffusers, transformers, peft, accelerate and videocm
# imported (resident 0.42 GiB measured on this machine, 2026-12-07)
RUNTIME_GIB = 0.45
SAVE_SHARD_GIB = 1.0  # serialising a saved network holds one shard's bytes (models/folder.py SHARD_SIZE)


@dataclass
class PlanConfig:
    """``videocm plan``: every field is a ``--key value`` flag."""

    teacher: str  # teacher: a videocm teacher folder, a diffusers pipeline folder, or a denoiser's config.json
    frames: Count | None = None  # clip frames (default: the teacher's)
    height: Count | None = None  # clip height in pixels (default: the teacher's)
    width: Count | None = None  # clip width in pixels (default: the teacher's)
    method: Literal["lcm", "dcm", "scm", "rcm"] = "lcm"  # lcm, dcm, scm or rcm
    student: Literal["full", "lora"] = "full"  # full fine-tune or LoRA (lcm; a DCM detail expert is always LoRA)
    gpus: Count = 8  # GPUs in the run
    gpu_memory: Positive = 80.0  # GiB of each GPU
    batch_size: Count | None = None  # a global batch to check (default: the largest that fits)
    text_tokens: Count | None = None  # text states per clip (default: the teacher's)
    lora_rank: Count = 16  # LoRA rank of a LoRA student or DCM's detail expert
    device: PlannedDevice = "cuda"  # cuda (bf16 teacher and activations) or cpu (float32 everywhere, as on this machine)
    gpu_tflops: Positive = 989.0  # each GPU's dense bf16 peak (H100 SXM: 989), an assumption
    mfu: Fraction = 0.35  # the fraction of that peak reached, an assumption
    step_cost: Positive = 5.8  # one LCM step in forwards of the student (measured; see the module docstring)
    jvp_cost: Positive = 4.0  # sCM / rCM: the student's forward-mode JVP in forwards (measured: 4.0 flow, 4.9 VP; docs/scm.md)
    fake_updates: Natural = 4  # rcm: fake-score updates per student step (rCM's 1.3B recipe: 4)
    reserve: NonNegative = 2.0  # GiB per GPU kept free (CUDA context, allocator slack)
    json: OutputPath | None = None  # write the figures here
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)


@dataclass
class NetworkCost:
    """What one clip costs the denoiser: parameters, FLOPs and autograd's saved bytes of one forward."""

    parameters: int
    largest_block_parameters: int
    forward_flops: int
    saved_bytes: int  # without checkpointing
    checkpointed_bytes: int  # block inputs + the largest block's saved bytes + what is saved outside the blocks
    lora_parameters: int  # rank-r LoRA on the family's LoRA targets
    detail_parameters: int  # DCM's detail expert: rank-r LoRA on attention + its own modules
    blocks: int
    encoder_parameters: int = 0  # a pipeline's text encoder(s) and VAE (held in float32 on the CPU)
    lora_saved_bytes: int | None = None  # saved bytes of a LoRA student (its base frozen); None: as a full one
    lora_checkpointed_bytes: int | None = None
    attention_scores: int = 0  # elements of the largest attention's score matrix (heads x queries x keys) of a clip


def encoder_parameters(path: str | Path) -> int:
    """Parameters of the text encoder(s) and VAE beside the denoiser in a pipeline or videocm folder (read from
    their safetensors headers; 0 for a config file)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_dir():
        return 0
    total = 0
    for folder in [p for p in path.iterdir() if p.is_dir() and (p.name.startswith("text_encoder") or p.name == "vae")]:
        for file in folder.glob("*.safetensors"):
            with safe_open(str(file), "pt") as handle:
                total += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    return total


def describe_teacher(path: str | Path) -> tuple[FamilySpec, dict, list[int], int, list[int] | None]:
    """``(family, network config, default [frames, height, width], text tokens, latent shape or None)`` of a
    teacher folder (which knows its latent shape), a pipeline folder or a denoiser config file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        config = json.loads(path.read_text())
        spec = family_for_network(config.get("_class_name"))
        if spec is None:
            raise VideoCMError(f"{path}: {config.get('_class_name')!r} is not a denoiser class videocm knows")
        layout = spec.pipeline
        return spec, config, [layout.frames, layout.height, layout.width], layout.max_sequence_length, None
    if (path / "model_index.json").is_file():
        spec = family_for_pipeline(json.loads((path / "model_index.json").read_text()).get("_class_name"))
        if spec is None:
            raise VideoCMError(f"{path}: not a pipeline class videocm distils")
        config = json.loads((path / spec.subfolder / "config.json").read_text())
        layout = spec.pipeline
        return spec, config, [layout.frames, layout.height, layout.width], layout.max_sequence_length, None
    if is_model_folder(path):
        info = ModelInfo.load(path)
        spec = get_family(info.family)
        config = json.loads((path / spec.subfolder / "config.json").read_text())
        video = info.video_shape or [8, 32, 32]
        return (spec, config, [int(video[0]), int(video[1]), int(video[-1])], info.text_length,
                list(info.latent_shape) if info.latent_shape else None)
    raise VideoCMError(f"{path}: give a videocm teacher folder, a diffusers pipeline folder or a denoiser config.json")


def build_on_meta(spec: FamilySpec, config: dict, dtype: torch.dtype) -> nn.Module:
    """The denoiser of ``config`` with meta tensors: shapes only."""
    with torch.device("meta"):
        network = spec.diffusers_class().from_config(config)
    return network.to(dtype)


def _lora_parameters(network: nn.Module, targets: tuple[str, ...] | list[str], rank: int) -> int:
    total = 0
    for name, module in network.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            total += rank * (module.in_features + module.out_features)
    return total


class _FlashLikeAttention(torch.autograd.Function):
    """Stands in for ``scaled_dot_product_attention`` while saved bytes are counted: it saves what a fused kernel
    (flash attention on a GPU, its CPU counterpart) keeps for the backward, the inputs, the output and one
    float32 log-sum-exp per query row, where the meta device's math fallback would keep the whole attention
    matrix."""

    @staticmethod
    def forward(ctx, query, key, value, mask):
        out = query.new_empty((*query.shape[:-1], value.shape[-1]))
        logsumexp = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, logsumexp, *([mask] if mask is not None else []))
        return out

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("counting only")


def _flash_like_sdpa(query, key, value, attn_mask=None, *args, **kwargs):
    return _FlashLikeAttention.apply(query, key, value, attn_mask)


def _saved_bytes(spec: FamilySpec, network: nn.Module, latent_shape, text_tokens: int,
                 fused_attention: bool) -> tuple[int, int, list[int]]:
    """``(saved bytes, checkpointed bytes, saved bytes per block)`` of one forward with autograd, for the
    parameters ``network`` trains (its ``requires_grad``)."""
    device = next(network.parameters()).device
    dtype = next(network.parameters()).dtype
    blocks = spec.shard_blocks(network)
    current = [None]
    saved = {id(b): 0 for b in blocks}
    saved[None] = 0
    inputs = [0]

    # each storage once (one input saved by several ops, views of one tensor), and never the weights themselves
    seen = {p.untyped_storage()._cdata for p in network.parameters()}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage._cdata not in seen:
            seen.add(storage._cdata)
            saved[current[0]] += storage.nbytes()
        return tensor

    def enter(block, args, kwargs):
        current[0] = id(block)
        first = args[0] if args else next(iter(kwargs.values()))
        inputs[0] += first.numel() * first.element_size()

    def leave(block, args, output):
        current[0] = None

    handles = [b.register_forward_pre_hook(enter, with_kwargs=True) for b in blocks]
    handles += [b.register_forward_hook(leave) for b in blocks]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if fused_attention:
        torch.nn.functional.scaled_dot_product_attention = _flash_like_sdpa
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            spec.run(network, **spec.example_inputs(network, 1, latent_shape, text_tokens, device, dtype))
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
        for handle in handles:
            handle.remove()
    per_block = [saved[id(b)] for b in blocks] or [0]
    return sum(saved.values()), inputs[0] + max(per_block) + saved[None], per_block


def measure_network(spec: FamilySpec, network: nn.Module, latent_shape: tuple[int, int, int, int],
                    text_tokens: int, rank: int = 16, fused_attention: bool = True) -> NetworkCost:
    """Count :class:`NetworkCost` for one clip of ``latent_shape`` ``(C, T, h, w)`` (``network`` may be on meta;
    ``fused_attention``: count attention as a fused kernel saves it, see :class:`_FlashLikeAttention`). The saved
    bytes are counted twice: with every weight trained, and for a LoRA student (its base frozen)."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    from ..models.student import add_lora

    device = next(network.parameters()).device
    dtype = next(network.parameters()).dtype
    blocks = spec.shard_blocks(network)
    network.requires_grad_(True)
    example = spec.example_inputs(network, 1, latent_shape, text_tokens, device, dtype)
    largest = [0]
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(query, key, value, *args, **kwargs):  # the math kernel's score matrix, per call
        largest[0] = max(largest[0], query.shape[:-1].numel() * key.shape[-2])
        return sdpa(query, key, value, *args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = recording_sdpa
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            spec.run(network, **example)
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    saved, checkpointed, _ = _saved_bytes(spec, network, latent_shape, text_tokens, fused_attention)
    lora = copy.deepcopy(network)
    add_lora(spec, lora, rank, float(rank))  # on the meta device too; only the adapters train
    lora_saved, lora_checkpointed, _ = _saved_bytes(spec, lora, latent_shape, text_tokens, fused_attention)
    params = [sum(p.numel() for p in b.parameters()) for b in blocks] or [0]
    own = spec.detail_own_modules
    detail = (_lora_parameters(network, DETAIL_LORA_TARGETS, rank)
              + sum(p.numel() for n, p in network.named_parameters() if _is_own(n, own)))
    return NetworkCost(parameters=sum(p.numel() for p in network.parameters()),
                       largest_block_parameters=max(params), forward_flops=int(counter.get_total_flops()),
                       saved_bytes=saved, checkpointed_bytes=checkpointed,
                       lora_parameters=_lora_parameters(network, spec.lora_targets, rank),
                       detail_parameters=detail, blocks=len(blocks), lora_saved_bytes=lora_saved,
                       lora_checkpointed_bytes=lora_checkpointed, attention_scores=largest[0])


def memory_per_gpu(cost: NetworkCost, config: PlanConfig, mode: str, context: int, checkpointing: bool,
                   stage: str) -> dict[str, float]:
    """GiB per GPU of each part, and the activations of one clip (``activations_per_clip``), for one mode."""
    gpus = config.gpus
    shard = 1 if mode == "ddp" else gpus
    on_gpu = config.device == "cuda"
    trainable = {"full": cost.parameters, "lora": cost.lora_parameters, "detail": cost.detail_parameters,
                 "scm": cost.parameters, "rcm": cost.parameters}[stage]
    p = cost.parameters
    if stage == "lora" and cost.lora_saved_bytes is not None:
        activations = (cost.lora_checkpointed_bytes if checkpointing else cost.lora_saved_bytes) / context
    else:
        activations = (cost.checkpointed_bytes if checkpointing else cost.saved_bytes) / context
    if stage == "detail":  # the teacher's forward with autograd on real and fake clips, for the heads
        activations += 2 * cost.saved_bytes / context
    if stage in ("scm", "rcm"):
        # the forward-mode JVP runs attention on PyTorch's math kernel (no fused kernel has a forward-mode rule): its
        # score matrix and softmax, each with a tangent, held one attention at a time, before the backward's forward
        jvp = 4 * cost.attention_scores * (2 if on_gpu else 4) / context
        activations = max(activations, jvp)
    # without sharding, a LoRA student's frozen base is the teacher's own weights and an EMA target of a student
    # with frozen parts (LoRA, DCM's detail expert) holds its trainable weights alone (distill/core.py)
    shared = mode == "ddp" and stage in ("lora", "detail")
    parts = {"student_weights": 4 * (trainable if shared and stage == "lora" else p) / shard,
             "gradients": 4 * trainable / shard,
             "optimiser": 8 * trainable / shard,
             "ema_target": 0.0 if stage in ("scm", "rcm") else 4 * (trainable if shared else p) / shard,
             "teacher": (2 if on_gpu else 4) * p / shard,
             "gathered_blocks": 2 * cost.largest_block_parameters * (2 if on_gpu else 4) if mode != "ddp" else 0.0}
    if stage == "rcm":  # the fake score: a full float32 copy of the teacher's network, trained (weights, gradients, AdamW)
        parts["fake_score"] = 16 * p / shard
    if not on_gpu:  # the process itself, and the encoders (on a GPU they are offloaded to the CPU)
        parts["runtime"] = RUNTIME_GIB * GIB
        parts["encoders"] = 4 * cost.encoder_parameters
    result = {k: v / GIB for k, v in parts.items()}
    result["activations_per_clip"] = activations / GIB
    # writing the student at the end (and a monitoring sample's merged copy): the network in float16 where the
    # weights are (under fsdp, the main process's plain copy on the CPU), and on the CPU one shard's bytes
    saving = 2 * p if mode == "ddp" or not on_gpu else 0
    result["saving"] = (saving + (min(SAVE_SHARD_GIB * GIB, 2 * p) if not on_gpu else 0)) / GIB
    return result


def plan_rows(cost: NetworkCost, config: PlanConfig) -> list[dict]:
    """One row per (mode, context degree, checkpointing, stage): memory, largest batch, seconds per step."""
    stages = ({"lcm": ["full" if config.student == "full" else "lora"], "scm": ["scm"], "rcm": ["rcm"]}
              .get(config.method, ["full", "detail"]))
    contexts = [c for c in (1, 2, 4, 8) if c <= config.gpus and config.gpus % c == 0]
    rows = []
    for mode, context in [("ddp", 1), *[("fsdp", c) for c in contexts]]:
        for checkpointing in (False, True):
            stage_rows = []
            for stage in stages:
                parts = memory_per_gpu(cost, config, mode, context, checkpointing, stage)
                fixed = sum(v for k, v in parts.items() if k not in ("activations_per_clip", "saving"))
                room = config.gpu_memory - config.reserve - fixed
                per_gpu = max(0, math.floor(room / parts["activations_per_clip"])) if room > 0 else 0
                if fixed + parts["saving"] > config.gpu_memory - config.reserve:
                    per_gpu = 0  # trains, but cannot write its student
                groups = config.gpus // context  # data-parallel groups; a clip is split over its group
                largest = per_gpu * groups
                flops = (step_forwards(config, stage) + (1 if checkpointing else 0)) * cost.forward_flops
                seconds_per_clip = flops / (config.gpus * config.gpu_tflops * 1e12 * config.mfu)
                batch = config.batch_size or largest
                at_batch = fixed + parts["activations_per_clip"] * math.ceil(batch / groups) if batch else None
                stage_rows.append({"stage": stage, **parts, "fixed_gib": fixed, "largest_global_batch": largest,
                                   "gib_at_batch": at_batch,
                                   "peak_gib": max(at_batch, fixed + parts["saving"]) if batch else None,
                                   "seconds_per_step": seconds_per_clip * batch if batch else None})
            name = "ddp" if mode == "ddp" else ("fsdp" if context == 1 else f"fsdp+cp{context}")
            worst = min(stage_rows, key=lambda r: r["largest_global_batch"])
            rows.append({"mode": name, "context_parallel": context, "gradient_checkpointing": checkpointing,
                         "stages": stage_rows, "largest_global_batch": worst["largest_global_batch"],
                         "fits": (worst["largest_global_batch"] >= (config.batch_size or 1)),
                         "seconds_per_step": max((r["seconds_per_step"] or 0) for r in stage_rows)})
    return rows


def step_forwards(config: PlanConfig, stage: str) -> float:
    """One step's cost in forwards of the student: LCM's and DCM's measured ``step_cost``; sCM: the student's
    forward and backward (3), the guided teacher (2) and the JVP (``jvp_cost``); rCM adds per step the fake
    score's updates (3 each), the term's teacher and fake forwards (3) and the simulated sample's student forward
    and backward (3; its no-gradient steps, 1.5 on average, too)."""
    if stage == "scm":
        return 5 + config.jvp_cost
    if stage == "rcm":
        return 5 + config.jvp_cost + 3 * config.fake_updates + 3 + 3 + 1.5
    return config.step_cost


def cheapest(rows: list[dict]) -> dict | None:
    """The fitting row with the least time per clip (checkpointing costs a forward); ties: the simpler mode."""
    fitting = [r for r in rows if r["fits"]]
    return min(fitting, key=lambda r: (r["gradient_checkpointing"], r["context_parallel"], r["mode"] != "ddp"),
               default=None)


def plan_cost(config: PlanConfig) -> tuple[FamilySpec, list[int], tuple[int, ...], NetworkCost]:
    """``(family, clip [frames, height, width], latent shape, what one clip costs)`` of ``config``'s teacher at
    its clip shape (the teacher's own unless given), the encoders counted."""
    spec, network_config, video, tokens, latent = describe_teacher(config.teacher)
    frames, height, width = (config.frames or video[0], config.height or video[1], config.width or video[2])
    factor = spec.latent_factors[1]
    if latent is None or [frames, height, width] != video:  # a videocm teacher's own VAE knows its latent shape
        if latent is not None:
            raise VideoCMError(f"{config.teacher} distils at its own clip shape {video}; drop --frames/--height/--width")
        if height % factor or width % factor:
            raise VideoCMError(f"--height {height} and --width {width} must be multiples of {factor} (the VAE's "
                               f"factor)")
        latent = (int(network_config.get("in_channels", 4)), spec.latent_frames(frames), height // factor,
                  width // factor)
    latent = tuple(int(v) for v in latent)
    dtype = torch.bfloat16 if config.device == "cuda" else torch.float32
    cost = measure_network(spec, build_on_meta(spec, network_config, dtype), latent, config.text_tokens or tokens,
                           config.lora_rank)
    cost = dataclasses.replace(cost, encoder_parameters=encoder_parameters(config.teacher))
    return spec, [frames, height, width], latent, cost


def run_plan(config: PlanConfig) -> int:
    check_values(config)  # a config built in Python: its choices and ranges
    spec, (frames, height, width), latent, cost = plan_cost(config)
    rows = plan_rows(cost, config)
    best = cheapest(rows)
    instead = None
    if best is None and config.method == "lcm" and config.student == "full":  # would a LoRA student fit?
        lora = cheapest(plan_rows(cost, dataclasses.replace(config, student="lora")))
        instead = lora and {"student": "lora", **{k: lora[k] for k in ("mode", "context_parallel",
                                                                        "gradient_checkpointing")},
                            "peak_gib": max(s["peak_gib"] or 0 for s in lora["stages"])}
    result = {"teacher": config.teacher, "family": spec.name, "clip": [frames, height, width],
              "latent": list(latent), "gpus": config.gpus, "gpu_memory_gib": config.gpu_memory,
              "parameters": cost.parameters, "forward_tflops_per_clip": cost.forward_flops / 1e12,
              "assumed": {"gpu_tflops": config.gpu_tflops, "mfu": config.mfu, "step_cost": config.step_cost,
                          "jvp_cost": config.jvp_cost},
              "attention_scores_per_clip": cost.attention_scores,
              "rows": rows,
              "cheapest": best and {k: best[k] for k in ("mode", "context_parallel", "gradient_checkpointing")},
              "instead": instead}
    print(plan_table(result))
    if config.json:
        Path(config.json).write_text(json.dumps(result, indent=2))
    return 0


def plan_table(result: dict) -> str:
    lines = [f"{result['family']} teacher, {result['parameters'] / 1e9:.2f} B parameters, clip "
             f"{'x'.join(map(str, result['clip']))} (latent {'x'.join(map(str, result['latent']))}), "
             f"{result['forward_tflops_per_clip']:.2f} TFLOPs a forward; {result['gpus']} GPUs of "
             f"{result['gpu_memory_gib']:g} GiB",
             "", "| mode | checkpointing | stage | weights+grads+optimiser+EMA+teacher GiB | activations GiB/clip "
             "| largest global batch | s/step at that batch | peak GiB (writing the student) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for stage in row["stages"]:
            peak = stage.get("peak_gib")
            lines.append(f"| {row['mode']} | {'yes' if row['gradient_checkpointing'] else 'no'} | {stage['stage']} "
                         f"| {stage['fixed_gib']:.1f} | {stage['activations_per_clip']:.2f} "
                         f"| {stage['largest_global_batch']} | "
                         f"{'-' if not stage['seconds_per_step'] else format(stage['seconds_per_step'], '.2f')} "
                         f"| {'-' if peak is None else format(peak, '.1f')} |")
    best = result["cheapest"]
    lines.append("")
    lines.append(f"cheapest mode that fits: {best['mode']}" + (" with --gradient-checkpointing true"
                                                               if best["gradient_checkpointing"] else "")
                 + f" (distill flags: {mode_flags(best)})"
                 if best else "nothing fits: more GPUs, a LoRA student or a smaller clip" + (
                     f"; --student lora fits ({mode_flags(result['instead'])}, peak "
                     f"{result['instead']['peak_gib']:.1f} GiB)" if result.get("instead") else ""))
    return "\n".join(lines)


def mode_flags(row: dict) -> str:
    """The ``videocm distill`` flags of a plan row's mode."""
    mode, context = row["mode"], int(row.get("context_parallel", 1))
    flags = ["--parallel", "ddp" if mode == "ddp" else "fsdp"]
    if context > 1:
        flags += ["--context-parallel", str(context)]
    if row["gradient_checkpointing"]:
        flags += ["--gradient-checkpointing", "true"]
    return " ".join(flags)
