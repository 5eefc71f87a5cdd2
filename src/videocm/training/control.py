"""Training a control branch on a frozen teacher (``videocm train-control``).

:class:`ControlTask`: the loss is the teacher's own denoising loss (:func:`.teacher.denoising_loss`: flow matching
for flow teachers, min-SNR v-prediction for VP ones) on MovingDigits train clips, with the clip's silhouette as the
control; only the branch learns. Captions are dropped at the teacher's rate, so guidance keeps working with a
control (both halves of guidance see it). ``--init-control`` continues from a saved branch; with ``--student`` the
run is instead the branch's consistency fine-tune for that student
(:class:`videocm.distill.control.ControlConsistencyTask`).
"""

from __future__ import annotations

from ..distill.control import ControlBranchTask, ControlConfig, ControlConsistencyTask
from ..distill.trainer import Monitor, Step, run_and_summarise
from ..models.denoisers import ControlledDenoiser
from ..pipeline import VideoPipeline
from .teacher import denoising_loss

__all__ = ["ControlConfig", "ControlTask", "train_control"]


class ControlTask(ControlBranchTask):
    """Trains ``model`` (the branch) through the frozen teacher it is joined to."""

    def loss(self, model, step: Step):
        n, rows, device = step.batch_size, step.rows, step.device
        latents, controls, text, _ = self.batches.draw_with_control(n, step.rng, step.shard, device)
        teacher = ControlledDenoiser(self.teacher.denoiser, model)  # the prepared branch, so gradients reach it
        c = self.config
        loss = denoising_loss(lambda noisy, timestep: teacher(noisy, timestep, **text, control=controls),
                              self.teacher.schedule, latents, step.generator, n, rows, c.logit_normal_mean,
                              c.logit_normal_std, c.snr_gamma)
        return loss, {}

    def sample(self, model, step, out, monitor: Monitor):
        """Control fidelity of the teacher with the branch at ``sample_steps`` on held-out clips."""
        was_training = model.training
        model.eval()
        pipeline = VideoPipeline(self.teacher, next(model.parameters()).device, text=self.text).use_control(model)
        scores = monitor.control_samples(pipeline, self.config.sample_clips, self.config.sample_steps,
                                         self.config.guidance, self.geometry)
        model.train(was_training)
        return scores


def train_control(config: ControlConfig, progress: bool = True, monitor: Monitor | None = None) -> dict:
    return run_and_summarise(config, ControlConsistencyTask if config.student else ControlTask, progress, monitor)
