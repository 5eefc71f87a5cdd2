"""The VAE decode of the shipped models: milliseconds per clip as diffusers decodes it (2 latent frames at a time
with a causal cache), all 8 latent frames at once, and compiled with ``torch.compile``; and how far the
all-at-once clips are from the default ones.

    python benchmarks/vae_decode.py [--batch 16 --repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from videocm.models.folder import load_vae


def timed(vae, latents, repeats):
    vae.decode(latents)
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        out = vae.decode(latents)
        seconds.append(time.perf_counter() - began)
    return 1000 * statistics.median(seconds) / len(latents), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    vae = load_vae("models/vae")
    latents = torch.randn(args.batch, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        default_ms, default = timed(vae, latents, args.repeats)
        vae.vae.num_latent_frames_batch_size = 8
        whole_ms, whole = timed(vae, latents, args.repeats)
        vae.vae.num_latent_frames_batch_size = 2
        vae.vae.decoder.compile()
        began = time.perf_counter()
        vae.decode(latents)
        compile_seconds = time.perf_counter() - began
        compiled_ms, compiled = timed(vae, latents, args.repeats)
    print(f"default (2 latent frames at a time): {default_ms:.2f} ms/clip")
    print(f"all 8 latent frames at once:         {whole_ms:.2f} ms/clip, max difference "
          f"{127.5 * (whole - default).abs().max().item():.1f}/255")
    print(f"compiled: first call {compile_seconds:.1f} s, then {compiled_ms:.2f} ms/clip, max difference "
          f"{127.5 * (compiled - default).abs().max().item():.4f}/255")


if __name__ == "__main__":
    main()
