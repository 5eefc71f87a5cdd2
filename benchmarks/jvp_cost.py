"""What sCM's forward-mode JVP costs in forwards of the student, on this machine.

    python benchmarks/jvp_cost.py models/teacher-flow models/teacher-vp

For each model folder, batch 16 of random latents and text states at TrigFlow time 1.0: the median of 5 timed runs
(after one warm-up) of a plain forward (``TrigFlow.call`` under ``no_grad``), the JVP (``velocity_jvp``) and a
forward and backward; prints their seconds and the JVP's and the backward's ratios to the forward
(``docs/scm.md``, "Cost, measured").
"""

import sys
import time

import torch

from videocm.diffusion.trigflow import TrigFlow, velocity_jvp
from videocm.models.folder import load_model


def median_seconds(function, repeats: int = 5) -> float:
    function()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return sorted(times)[len(times) // 2]


def main(folders: list[str]) -> None:
    torch.manual_seed(0)
    for name in folders:
        model = load_model(name)
        denoiser, trig, batch = model.denoiser, TrigFlow(model.schedule), 16
        x, t = torch.randn(batch, *model.info.latent_shape), torch.full((batch,), 1.0)
        text = {"encoder_hidden_states": torch.randn(batch, 16, 384)}

        def forward():
            with torch.no_grad():
                trig.call(denoiser, x, t, text)

        def jvp():
            with torch.no_grad():
                velocity_jvp(denoiser, trig, x, t, text, torch.ones_like(x), torch.ones_like(t))

        def forward_backward():
            denoiser.requires_grad_(True)
            trig.call(denoiser, x, t, text).square().mean().backward()
            denoiser.zero_grad(set_to_none=True)
            denoiser.requires_grad_(False)

        seconds = {"forward": median_seconds(forward), "jvp": median_seconds(jvp),
                   "forward_backward": median_seconds(forward_backward)}
        print(name, {k: round(v, 4) for k, v in seconds.items()},
              f"jvp/forward {seconds['jvp'] / seconds['forward']:.2f}",
              f"forward+backward/forward {seconds['forward_backward'] / seconds['forward']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
