"""Training that is not distillation, on the shared trainer (:mod:`videocm.distill.trainer`): MovingDigits teachers
(:mod:`.teacher`), the video VAE (:mod:`.vae`), tiny decoders (:mod:`.decoder`) and control branches
(:mod:`.control`); and the tools around runs: the memory and time planner (:mod:`.plan`) and the gathering of a
sharded checkpoint into a student folder (:mod:`.gather`)."""
