"""The side jobs of a training run as callbacks: sample grid, metrics log, progress bar, checkpoints, final LoRA.

``trainer.train`` registers ``default_callbacks(state)`` on rank 0 and calls, after every optimizer step,
``on_step_end(state)`` of each in order (the sample grid first, so its ``sample/*`` metrics are logged with
the step), and ``on_train_end(state)`` once when the loop ends (minGPT's ``trigger_callbacks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .checkpointing import save_checkpoint
from .lora_export import export_kohya

if TYPE_CHECKING:
    from .trainer import TrainState


class Callback:
    """A side job of the run; both hooks do nothing unless overridden."""

    def on_step_end(self, state: TrainState) -> None:
        """After optimizer step state.step (1-based count of steps done), with its state.metrics."""

    def on_train_end(self, state: TrainState) -> None:
        """Once, after the last step of this process (also when no step ran)."""


class SampleGridCallback(Callback):
    """Every output.sample_every steps and at train.max_steps: the fixed-seed grid, adding its sample/* metrics."""

    def __init__(self, state: TrainState):
        from .monitor import SampleMonitor

        out = state.config.output
        self.every = out.sample_every
        self.monitor = SampleMonitor(state.model, state.reward, state.prompts[: out.sample_prompts], out.dir,
                                     out.sample_seed, state.config.draft)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0 or state.step == state.config.train.max_steps:
            state.metrics.update(self.monitor(state.step))


class MetricsLogCallback(Callback):
    """One metrics.jsonl record per step (records after the resumed step are dropped first)."""

    def __init__(self, state: TrainState):
        from .monitor import MetricsLogger

        self.logger = MetricsLogger(state.config.output.dir, state.config.output.tensorboard)
        self.logger.truncate_after(state.step)

    def on_step_end(self, state: TrainState) -> None:
        self.logger.log(state.step, state.metrics)

    def on_train_end(self, state: TrainState) -> None:
        self.logger.close()


class ProgressBarCallback(Callback):
    """A tqdm bar over train.max_steps showing the reward and KL of the last step."""

    def __init__(self, state: TrainState):
        from tqdm import tqdm

        self.bar = tqdm(total=state.config.train.max_steps, initial=state.step, desc="DRaFT", unit="step")

    def on_step_end(self, state: TrainState) -> None:
        self.bar.set_postfix(reward=f"{state.metrics['reward_mean']:.4f}", kl=f"{state.metrics['kl']:.2e}")
        self.bar.update(1)

    def on_train_end(self, state: TrainState) -> None:
        self.bar.close()


class CheckpointCallback(Callback):
    """A resumable checkpoint every output.checkpoint_every steps and at the last step of this process."""

    def on_step_end(self, state: TrainState) -> None:
        every = state.config.output.checkpoint_every
        if (every and state.step % every == 0) or state.step == state.end:
            resolved = state.resolved_config()
            save_checkpoint(state.config.output.dir, state.step, state.model.unet, state.optimizer,
                            state.scheduler, resolved, kohya_writer=lambda path: export_kohya(
                                state.model.unet, path, base_model=state.base_kind, config=resolved),
                            keep=state.config.output.keep_checkpoints)


class FinalExportCallback(Callback):
    """lora_final.safetensors (kohya) once the run has reached train.max_steps (not after --stop-after)."""

    def on_train_end(self, state: TrainState) -> None:
        if state.end == state.config.train.max_steps:
            export_kohya(state.model.unet, state.out_dir / "lora_final.safetensors", base_model=state.base_kind,
                         config=state.resolved_config())


def default_callbacks(state: TrainState) -> list[Callback]:
    """Rank 0's callbacks in call order: sample grid (when output.sample_every > 0), log, bar, checkpoints, export."""
    log = MetricsLogCallback(state)
    grid = [SampleGridCallback(state)] if state.config.output.sample_every > 0 else []
    return [*grid, log, ProgressBarCallback(state), CheckpointCallback(), FinalExportCallback()]
