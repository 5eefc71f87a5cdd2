"""How the trainer spreads a run over processes: the ``--parallel`` mode as an object the loop calls.

* :class:`DataParallel` (``--parallel ddp``, the default): accelerate wraps the student in DDP; every process
  holds every weight; checkpoints are accelerate's ``save_state`` folders.
* :class:`FullySharded` (``--parallel fsdp``): FSDP2 (``torch.distributed.fsdp.fully_shard``) shards the student
  per block (the family's :meth:`FamilySpec.shard_blocks`), and with it the task's frozen networks (the teacher
  unless ``--fsdp-shard-teacher false``, the EMA consistency target); bf16 compute with float32 master weights
  and reductions under ``--mixed-precision bf16``. Checkpoints are ``torch.distributed.checkpoint`` folders
  (sharded model, optimiser, scheduler, EMA, the task's extra state): a run resumes on the same or another
  number of processes. The main process keeps a plain copy of the task (built once, on the CPU) into which the
  gathered weights are loaded for monitoring samples and for the saved folder, so the methods never see shards.

``--context-parallel N`` (with ``fsdp``) adds diffusers' context parallelism (``ContextParallelConfig``, applied
with ``enable_parallelism`` to every denoiser network of the task): the processes form a ``(dp, ring, ulysses)``
device mesh; each group of N consecutive ranks splits one clip's tokens (Ulysses all-to-all over heads, or ring
attention on GPU backends that return the log-sum-exp) and draws the same rows of the batch; FSDP shards over
every process, and its gradient reduction divides by the data-parallel size only (each rank of a group holds
the gradient of its own tokens; their sum is the clip's gradient).

The methods do not branch on the mode: a task names its frozen networks (``frozen_modules()``) and its own
modules and optimisers go through :meth:`prepare` (DCM's discriminator heads, which stay replicated: they are
small). accelerate still owns the process group, the device, autocast and gradient accumulation in both modes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from ..errors import VideoCMError
from .checkpoints import is_named



def shard_blocks(module: nn.Module) -> list[nn.Module]:
    """The units FSDP shards one at a time: a denoiser's blocks (its family's choice); other modules whole."""
    from ..models.denoisers import DenoiserAdapter, unwrapped

    experts = getattr(module, "experts", None)  # a two-expert teacher: both networks' blocks
    if experts is not None:
        return [block for expert in experts() for block in shard_blocks(expert)]
    base = unwrapped(module)
    if isinstance(base, DenoiserAdapter):
        return base.spec.shard_blocks(base.network)
    return []


def gather_full(state):
    """``state`` (nested dicts and lists) with every sharded tensor gathered whole, on the CPU. Every process
    must call it with the same structure (the gathers are collective)."""
    from torch.distributed.tensor import DTensor

    if isinstance(state, DTensor):
        return state.full_tensor().cpu()
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {key: gather_full(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(gather_full(value) for value in state)
    return state


class DataParallel:
    """``--parallel ddp``: accelerate's data parallelism (one process: plain training)."""

    mode = "ddp"

    def __init__(self, accelerator, config) -> None:
        self.accelerator, self.config = accelerator, config
        self.model = self.optimizer = None
        self.prepared: dict[str, object] = {}  # the task's own modules and optimisers by name
        self.prepared_in_order: list = []  # the same, in the order prepared (older checkpoints' positions)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def data_shard(self) -> tuple[int, int]:
        """``(index, count)`` of this process's share of each batch (ranks of one context group share one)."""
        return self.accelerator.process_index, self.accelerator.num_processes

    # ---- the networks -------------------------------------------------------------------------------------

    def prepare_student(self, model: nn.Module, make_optimizer):
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        return self.model, self.optimizer

    def shard_frozen(self, modules: dict[str, nn.Module | None]) -> None:
        """The task's frozen networks by role (``teacher``; ``target``, a copy of the student): here they stay
        whole on every process; ``--teacher-offload`` keeps the teacher in CPU memory."""
        if modules.get("teacher") is not None and getattr(self.config, "teacher_offload", False):
            offload_blocks(modules["teacher"], self.device)

    def split_sequences(self, modules: list[nn.Module | None], latent_shape=None) -> None:
        """Context parallelism for the denoisers inside ``modules`` (only under ``fsdp``)."""

    def prepare(self, **objects):
        """A task's own modules and optimisers by name (replicated, synchronised and checkpointed under their
        names): the prepared objects, in the order given (one object alone, not a tuple)."""
        prepared = self.accelerator.prepare(*objects.values())
        prepared = list(prepared) if isinstance(prepared, (list, tuple)) else [prepared]
        self.prepared.update(zip(objects, prepared))
        self.prepared_in_order.extend(prepared)
        return prepared[0] if len(prepared) == 1 else tuple(prepared)

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip_grad_norm_(self, parameters, max_norm: float):
        return self.accelerator.clip_grad_norm_(parameters, max_norm)

    # ---- checkpoints --------------------------------------------------------------------------------------

    def named_state(self) -> dict[str, object]:
        """The engine's own checkpointed state by name: the model, its optimiser, the task's prepared modules and
        optimisers, and fp16's gradient scaler."""
        states = {"model": self.unwrap_model(self.model), "optimizer": self.optimizer}
        states.update({name: self.unwrap_model(obj) if isinstance(obj, nn.Module) else obj
                       for name, obj in self.prepared.items()})
        if self.accelerator.scaler is not None:
            states["scaler"] = self.accelerator.scaler
        return states

    def save_state(self, folder: Path, states: dict[str, object]) -> None:
        """``model.safetensors`` and ``NAME.safetensors`` per other module or flat tensor state (``NAME.pt`` for an
        optimiser's, a schedule's and other structured state), from the main process; ``rng-R.pt`` per process.
        A module with frozen parts keeps only its trainable weights (:func:`checkpoint_tensors`)."""
        from safetensors.torch import save_file, save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:
            for name, obj in states.items():
                tensors = checkpoint_tensors(obj)
                path = folder / ("model.safetensors" if name == "model" else f"{name}.safetensors")
                if isinstance(obj, nn.Module) and tensors is None:  # every weight trains: the whole module
                    save_model(obj, str(path), force_contiguous=True)
                elif tensors is not None:
                    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path),
                              metadata={"videocm": TRAINABLE_ONLY})
                else:
                    torch.save(obj.state_dict(), folder / f"{name}.pt")
        save_random_states(folder, self.accelerator.process_index)

    def load_state(self, folder: Path, states: dict[str, object], positions: list[str]) -> None:
        """Every state of ``states`` from ``folder``; a checkpoint from before named state: accelerate's layout,
        its custom objects in the order ``positions`` names."""
        folder = Path(folder)
        if (folder / ".metadata").is_file():
            raise VideoCMError(f"{folder} is a sharded checkpoint (written with --parallel fsdp); resume with "
                               f"--parallel fsdp")
        if not is_named(folder):
            for name in positions:  # accelerate checks their number against the folder's, and loads them
                self.accelerator.register_for_checkpointing(states[name])
            try:
                self.accelerator.load_state(str(folder))
            finally:
                self.accelerator._custom_objects.clear()  # saved by name from here on, not by accelerate
            return
        for name, obj in states.items():
            path = folder / ("model.safetensors" if name == "model" else f"{name}.safetensors")
            if path.is_file():
                load_checkpoint_tensors(obj, path)
            else:  # structured state, or a module saved before safetensors were used for modules
                obj.load_state_dict(torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=False))
        load_random_states(folder, self.accelerator.process_index)

    # ---- what samples and saves see ------------------------------------------------------------------------

    @contextlib.contextmanager
    def plain(self, task, model, ema):
        """``(task, model, ema)`` whose weights are whole (here: the live ones), on the main process only."""
        yield (task, self.unwrap_model(model), ema) if self.accelerator.is_main_process else None


class FullySharded(DataParallel):
    """``--parallel fsdp``: FSDP2 over all processes (a 1-D mesh), DCP checkpoints."""

    mode = "fsdp"

    def __init__(self, accelerator, config, make_plain_task=None) -> None:
        super().__init__(accelerator, config)
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        self.context = int(getattr(config, "context_parallel", 1) or 1)
        self.context_kind = getattr(config, "context_parallel_kind", "ulysses")
        if self.context > 1 and self.context_kind == "ring" and accelerator.device.type != "cuda":
            raise VideoCMError("ring attention needs an attention backend that returns the log-sum-exp (cuDNN or "
                               "flash, on a GPU); on the CPU use --context-parallel-kind ulysses")
        world = accelerator.num_processes
        if self.context < 1 or world % self.context:
            raise VideoCMError(f"--context-parallel {self.context} does not divide the {world} processes; give a "
                               f"divisor of {world}")
        if not dist.is_initialized():  # one process without a launcher: a group of one
            dist.init_process_group("cuda:nccl,cpu:gloo" if accelerator.device.type == "cuda" else "gloo",
                                    store=dist.HashStore(), rank=0, world_size=1)
        ring, ulysses = (self.context, 1) if self.context_kind == "ring" else (1, self.context)
        # the 2-D layout (data x context; the context axis as diffusers names it), FSDP over all of it
        self.grid = init_device_mesh(accelerator.device.type, (world // self.context, ring, ulysses),
                                     mesh_dim_names=("dp", "ring", "ulysses"))
        self.mesh = self.grid._flatten("fsdp") if self.context > 1 else init_device_mesh(
            accelerator.device.type, (world,))
        self.make_plain_task = make_plain_task
        self._plain = None

    def _policy(self, trainable: bool):
        from torch.distributed.fsdp import MixedPrecisionPolicy

        if self.config.mixed_precision == "bf16" and trainable:
            return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        return MixedPrecisionPolicy()

    def _shard(self, module: nn.Module, trainable: bool, like_student: bool = False, offload: bool = False) -> None:
        from torch.distributed.fsdp import (
            CPUOffloadPolicy,
            FSDPModule,
            OffloadPolicy,
            fully_shard,
        )

        if isinstance(module, FSDPModule):
            return
        reshard = bool(getattr(self.config, "fsdp_reshard_after_forward", True))
        # an offloaded teacher's shards live in (pinned, on a GPU) CPU memory; each block is copied in to gather
        policy = CPUOffloadPolicy(pin_memory=self.device.type == "cuda") if offload else OffloadPolicy()
        blocks = shard_blocks(module)
        for block in blocks:
            fully_shard(block, mesh=self.mesh, mp_policy=self._policy(trainable), reshard_after_forward=reshard,
                        offload_policy=policy)
        # A frozen network's blocks are roots of their own: DCM back-propagates through the teacher's tapped
        # blocks only, and a root whose own output is not in the graph never finishes its backward. Its few
        # parameters outside the blocks (embeddings, output layer) stay whole on every process.
        if trainable or like_student or not blocks:
            fully_shard(module, mesh=self.mesh, mp_policy=self._policy(trainable), reshard_after_forward=reshard)

    def data_shard(self):
        import torch.distributed as dist

        return dist.get_rank() // self.context, dist.get_world_size() // self.context

    def split_sequences(self, modules, latent_shape=None):
        if self.context == 1:
            return
        networks = _denoiser_networks(modules)
        for network in networks:
            _check_context_parallel(network, self.context, self.context_kind, latent_shape)
        from diffusers import ContextParallelConfig

        for network in networks:
            if getattr(network, "_parallel_config", None) is not None:  # shared by two of the modules
                continue
            if self.context_kind == "ring":
                network.set_attention_backend("_native_cudnn")
            degrees = ({"ring_degree": self.context} if self.context_kind == "ring"
                       else {"ulysses_degree": self.context})
            with _cpu_device_count():
                network.enable_parallelism(config=ContextParallelConfig(mesh=self.grid, **degrees))

    def prepare_student(self, model, make_optimizer):
        self._shard(model, trainable=True)
        if self.context > 1:
            # the ranks of a context group hold the gradients of their own tokens: sum them, average over data
            from torch.distributed.fsdp import FSDPModule

            for module in model.modules():
                if isinstance(module, FSDPModule):
                    module.set_gradient_divide_factor(float(self.mesh.size() // self.context))
                    if self.device.type == "cpu":  # gloo has no pre-multiplied sum: scale, then sum
                        module.set_force_sum_reduction_for_comms(True)
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
        self.model = model
        # accelerate's wrapper skips the optimiser step on accumulation micro-steps
        self.optimizer = self.accelerator.prepare(optimizer)
        return model, self.optimizer

    def shard_frozen(self, modules):
        modules = dict(modules)
        if not getattr(self.config, "fsdp_shard_teacher", True):  # a whole copy on each process
            super().shard_frozen({"teacher": modules.pop("teacher", None)})
        offload = bool(getattr(self.config, "teacher_offload", False))
        for name, module in modules.items():
            if module is not None:
                # the consistency target is a copy of the student: sharded the same way, so EMA updates pair
                # shards with shards
                self._shard(module, trainable=False, like_student=name == "target",
                            offload=offload and name == "teacher")

    def clip_grad_norm_(self, parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)

    def _sharded(self, states: dict[str, object]) -> dict:
        """What DCP saves: the sharded model and optimiser, and every other state under ``state/NAME``."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        return {"model": get_model_state_dict(self.model),
                "optimizer": get_optimizer_state_dict(self.model, optimizer),
                "state": {name: obj.state_dict() for name, obj in states.items() if name not in ("model", "optimizer")}}

    def save_state(self, folder, states):
        import torch.distributed.checkpoint as dcp

        dcp.save(self._sharded(states), checkpoint_id=str(folder))
        save_random_states(Path(folder), self.accelerator.process_index)

    def load_state(self, folder, states, positions):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        if not (Path(folder) / ".metadata").is_file():
            raise VideoCMError(f"{folder} is not a sharded checkpoint (written with --parallel ddp?); resume with "
                               f"the --parallel it was written with")
        named = is_named(folder)
        state = self._sharded(states)
        if not named:  # before named state: the trainer's objects and the task's prepared ones by position
            others = state.pop("state")
            state["objects"] = {str(i): others[name] for i, name in enumerate(positions)}
            state["prepared"] = {str(i): obj.state_dict() for i, obj in enumerate(self.prepared_in_order)}
        dcp.load(state, checkpoint_id=str(folder))
        set_model_state_dict(self.model, state["model"])
        set_optimizer_state_dict(self.model, getattr(self.optimizer, "optimizer", self.optimizer),
                                 state["optimizer"])
        if named:
            for name, value in state["state"].items():
                states[name].load_state_dict(value)
            load_random_states(Path(folder), self.accelerator.process_index)
            return
        for i, name in enumerate(positions):
            states[name].load_state_dict(state["objects"][str(i)])
        for i, obj in enumerate(self.prepared_in_order):
            obj.load_state_dict(state["prepared"][str(i)])

    @contextlib.contextmanager
    def plain(self, task, model, ema):
        """Gather the student, the EMA and the task's checkpointed state on every process, load them into the
        main process's plain copy of the task and yield it there (None elsewhere)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        objects = gather_full({name: obj.state_dict() for name, obj in task.checkpoint_state().items()})
        ema_state = gather_full(ema.state_dict()) if ema is not None else None
        if not self.accelerator.is_main_process:
            yield None
            return
        if self._plain is None:
            if self.make_plain_task is None:
                raise VideoCMError("this task cannot sample or save under --parallel fsdp; use --parallel ddp")
            self._plain = self.make_plain_task()
        plain = self._plain
        plain.model.load_state_dict(full)
        for name, obj in plain.checkpoint_state().items():
            obj.load_state_dict(objects[name])
        plain_ema = None
        if ema_state is not None:
            from .ema import EMAState

            plain_ema = EMAState(plain.model, ema.ema.decay)
            plain_ema.load_state_dict(ema_state)
        yield plain, plain.model, plain_ema


def offload_blocks(module: nn.Module, device: torch.device) -> None:
    """Keep the denoiser networks in ``module`` in CPU memory, each block copied to ``device`` for its forward
    (diffusers' group offloading, with a side stream on a GPU). On the CPU there is nothing to move."""
    if device.type == "cpu":
        return
    for network in _denoiser_networks([module]):
        network.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                     offload_type="block_level", num_blocks_per_group=1,
                                     use_stream=device.type == "cuda")


def _denoiser_networks(modules) -> list[nn.Module]:
    """The diffusers networks of the denoisers inside ``modules``, each once."""
    from ..models.denoisers import ControlledDenoiser, DenoiserAdapter

    found: dict[int, nn.Module] = {}
    for module in modules:
        for sub in module.modules() if module is not None else []:
            if isinstance(sub, ControlledDenoiser):
                raise VideoCMError("--context-parallel does not split a control branch's residuals; train "
                                   "control students with --context-parallel 1")
            if isinstance(sub, DenoiserAdapter):
                found.setdefault(id(sub.network), sub.network)
    return list(found.values())


def _check_context_parallel(network: nn.Module, degree: int, kind: str, latent_shape) -> None:
    """One-line errors for what diffusers' context parallelism cannot split."""
    name = type(network).__name__
    if not getattr(network, "_cp_plan", None):
        raise VideoCMError(f"diffusers has no context-parallel plan for {name}; use --context-parallel 1 (Wan "
                           f"transformers have one)")
    heads = getattr(network.config, "num_attention_heads", None)
    if kind == "ulysses" and heads and heads % degree:
        raise VideoCMError(f"Ulysses attention splits the {heads} heads of {name} over {degree} processes; give "
                           f"a --context-parallel that divides {heads}")
    patch = getattr(network.config, "patch_size", None)
    if isinstance(patch, int):  # (frames, rows, columns) of a transformer that names one spatial size
        patch = (network.config.get("patch_size_t") or 1, patch, patch)
    if latent_shape is not None and patch is not None:
        frames, height, width = latent_shape[-3:]
        tokens = (frames // patch[0]) * (height // patch[1]) * (width // patch[2])
        if tokens % degree:
            raise VideoCMError(f"a clip of {tokens} tokens does not split over {degree} processes; give a "
                               f"--context-parallel that divides {tokens} or change the clip's shape")


@contextlib.contextmanager
def _cpu_device_count():
    """diffusers places a context-parallel rank on device ``rank % torch.accelerator.device_count()``, which is
    0 without an accelerator: count the CPU as one device while it does."""
    original = torch.accelerator.device_count
    if original() == 0:
        torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def save_random_states(folder: Path, process: int) -> None:
    """This process's random number generators (Python, numpy, torch, CUDA) as ``rng-R.pt``."""
    import random

    import numpy as np

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(states, Path(folder) / f"rng-{process}.pt")


def load_random_states(folder: Path, process: int) -> None:
    """Restore what :func:`save_random_states` wrote for this process (nothing when that file is absent: a
    checkpoint resumed on more processes than wrote it)."""
    import random

    import numpy as np

    path = Path(folder) / f"rng-{process}.pt"
    if not path.is_file():
        return
    states = torch.load(path, map_location="cpu", weights_only=False)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


TRAINABLE_ONLY = "trainable"  # safetensors metadata of a state that holds only a module's trainable weights


def checkpoint_tensors(obj) -> dict[str, torch.Tensor] | None:
    """What a checkpoint keeps of ``obj`` as safetensors: a module with frozen parts, only its trainable weights
    (the frozen ones are the teacher's, or an earlier stage's, rebuilt when the run resumes); a state that is a
    flat mapping of tensors (an EMA target's weights), itself. None: a whole module (every weight trains; saved
    with its tied weights once), or structured state (optimisers, schedules), which is pickled."""
    if isinstance(obj, nn.Module):
        named = list(obj.named_parameters())
        if all(p.requires_grad for _, p in named):
            return None
        return {name: p for name, p in named if p.requires_grad}
    state = obj.state_dict()
    flat = state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    storages = [v.untyped_storage().data_ptr() for v in state.values()] if flat else []
    return state if flat and len(set(storages)) == len(storages) else None  # tied tensors: pickled


def load_checkpoint_tensors(obj, path: Path) -> None:
    """Load what :func:`checkpoint_tensors` saved at ``path`` into ``obj``."""
    from safetensors import safe_open
    from safetensors.torch import load_file, load_model

    with safe_open(str(path), "pt") as handle:
        partial = (handle.metadata() or {}).get("videocm") == TRAINABLE_ONLY
    if not isinstance(obj, nn.Module):
        obj.load_state_dict(load_file(str(path)))
        return
    device = str(next(obj.parameters()).device)
    another = f"{path} holds the weights of another model"
    if not partial:
        try:
            load_model(obj, str(path), device=device)
        except RuntimeError as error:
            raise VideoCMError(f"{another} ({str(error).splitlines()[-1].strip()}); resume it with the settings it "
                               f"was started with") from None
        return
    state = load_file(str(path), device=device)
    trainable = {name: p for name, p in obj.named_parameters() if p.requires_grad}
    if set(state) != set(trainable):
        extra, lacking = sorted(set(state) - set(trainable)), sorted(set(trainable) - set(state))
        raise VideoCMError(f"{path} holds the trainable weights of another model ({len(extra)} not in this run's, "
                           f"{len(lacking)} of its missing, e.g. {(extra or lacking)[0]}); resume it with the "
                           f"settings it was started with")
    for name, value in state.items():
        if value.shape != trainable[name].shape:
            raise VideoCMError(f"{path} holds the trainable weights of another model ({name}: {tuple(value.shape)} "
                               f"where this run's is {tuple(trainable[name].shape)}); resume it with the settings "
                               f"it was started with")
    obj.load_state_dict(state, strict=False)


def make_engine(config, accelerator, make_plain_task=None) -> DataParallel:
    """The engine of ``config.parallel``; ``make_plain_task()`` builds the main process's unsharded copy of the
    task (FSDP only)."""
    mode = getattr(config, "parallel", "ddp")
    if mode == "ddp" and int(getattr(config, "context_parallel", 1) or 1) != 1:
        raise VideoCMError("--context-parallel needs --parallel fsdp")
    if mode == "ddp":
        return DataParallel(accelerator, config)
    return FullySharded(accelerator, config, make_plain_task)
