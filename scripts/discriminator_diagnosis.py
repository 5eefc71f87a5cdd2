"""What separates DCM's "real" from "fake" in the shipped flow run's detail stage (issue 17, item 1).

For batches of the detail segment, with the shipped detail expert as student and target (its EMA target at the end
of training is the expert itself up to the last updates): the consistency target ("real", DCM's choice), the
student's prediction ("fake") and, for contrast, the clean latents of the real clips ("data", what adversarial
distillation methods such as LADD and DMD2 use as real), all re-noised with one shared noise to a random time of the
segment, as the detail stage does. Per tapped teacher block it prints the relative feature distance
``||f_a - f_fake|| / ||f_a||`` (mean over clips), then trains fresh heads (DCM's optimiser settings) for
``--steps`` on each pair and prints the hinge loss they reach: 2 means the heads cannot tell the two apart.

    python scripts/discriminator_diagnosis.py --dcm models/dcm-flow --teacher models/teacher-flow
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile

import numpy as np
import torch

from videocm.distill.consistency import consistency_step
from videocm.distill.trainer import Step
from videocm.distill.dcm import DCMConfig, DCMStageTask, stage_config
from videocm.distill.discriminator import fit_discriminator
from videocm.models.folder import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dcm", default="models/dcm-flow")
    parser.add_argument("--teacher", default="models/teacher-flow")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300, help="head training steps per pair")
    parser.add_argument("--lr", type=float, default=1e-4, help="head learning rate (DCM's default)")
    parser.add_argument("--disc-every", type=int, default=2)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.manual_seed(0)
    student = load_model(args.dcm)
    semantic, detail = student.experts[0], student.experts[1]
    with tempfile.TemporaryDirectory() as scratch:
        config = DCMConfig(teacher=args.teacher, out=scratch, batch_size=args.batch_size,
                           latent_pool=4 * args.batch_size, sample_every=0, disc_every=args.disc_every,
                           boundaries=list(student.info.phased.boundaries))
        task = DCMStageTask(dataclasses.replace(stage_config(config, 1), out=scratch), 1, semantic, None, "cpu")
    distillation, tap = task.teacher_context, task.tap
    n = args.batch_size
    rng = np.random.default_rng(123)
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        step = Step(0, rng, generator, torch.device("cpu"), n)
        latents, text = distillation.draw(step)
        index, skip, w, noise = distillation.consistency_batch(step, task.segment, latents)
        c = task.config
        terms = consistency_step(detail, detail, distillation.teacher, distillation.schedule, distillation.grid,
                                 task.segment[0], latents, noise, index, skip, text,
                                 distillation.unconditional(text, n), w, text, c.sigma_data, c.timestep_scaling,
                                 c.loss, c.huber_c)
        low, high = task.segment
        index = torch.from_numpy(rng.integers(low + 1, high + 1, size=n))
        noise = torch.randn(latents.shape, generator=generator)
        t = distillation.grid[index]
        timestep = distillation.schedule.model_timestep(t)
        features = {}
        for name, clean in (("real", terms.target_estimate), ("fake", terms.prediction), ("data", latents)):
            with tap(tuple(clean.shape)) as taps:
                distillation.teacher(distillation.schedule.add_noise(clean, noise, t), timestep, **text)
            features[name] = [f.detach() for f in taps.features]
    result = {"segment": list(task.segment), "batch": n, "blocks": []}
    for j, (real, fake, data) in enumerate(zip(features["real"], features["fake"], features["data"])):
        def relative(a, b):
            return float(((a - b).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).mean())
        result["blocks"].append({"block": j, "channels": real.shape[1], "target_vs_fake": relative(real, fake),
                                 "data_vs_fake": relative(data, fake)})
    for pair in ("real", "data"):
        losses = fit_discriminator(features[pair], features["fake"], steps=args.steps, lr=args.lr)
        result[f"hinge_{pair}_vs_fake"] = {"first": losses[0], "last10_mean": float(np.mean(losses[-10:]))}
    result["latent_distance"] = {
        "target_vs_fake": float(((terms.target_estimate - terms.prediction).flatten(1).norm(dim=1)
                                 / terms.target_estimate.flatten(1).norm(dim=1)).mean()),
        "data_vs_fake": float(((latents - terms.prediction).flatten(1).norm(dim=1)
                               / latents.flatten(1).norm(dim=1)).mean())}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
