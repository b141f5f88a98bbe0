"""AIG sampling in ComfyUI: the AIGCFGGuider and the two nodes that build it (Jena et al. 2024, Sec. 4).

AIGCFGGuider returns (1 - g) * CFG(base) + g * CFG(tuned) with g = gamma(progress(sigma)) from
core/aig.py; each branch keeps its own CFG through ComfyUI's cfg_function, so sampler CFG patches
still apply. The tuned model is evaluated by a route from nodes/tuned_model.py.
AIGGuider outputs the guider for SamplerCustomAdvanced; AIGSampler is the one-node, KSampler-style form.

Known limits: ComfyUI's own bypass LoRA loader (`comfy.sd.load_bypass_lora_for_models`, newer than
0.3.6x) is not used: our bypass works on any ComfyUI with APPLY_MODEL wrappers. In the hooks and bypass
routes the base model's model_options (CFG patches, FreeU...) serve both branches. "*_cfg_pp" samplers
read uncond_denoised through a post-CFG hook, which runs per branch, so they see the last evaluated
branch's uncond rather than a mixed one.
"""

from __future__ import annotations

import logging
import math

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview
from comfy_api.latest import io

from ..core.aig import (
    AIGWeighting,
    FlowProgress,
    FluxProgress,
    TimestepProgress,
    check_tolerance,
    mix_predictions,
)
from ..core.errors import AIGInputError
from ..core.schedules import VALUE_NAMES, schedule_from_values
from .aig_inputs import lora_route_input, schedule_inputs, tolerance_input
from .combos import ListedCombo
from .folders import model_file
from .tuned_model import ONE_TUNED_MODEL, TUNED_COND_INDICES, TunedRoute, resolve_tuned

log = logging.getLogger(__name__)

TUNED_KEYS = ("aig_tuned_positive", "aig_tuned_negative")
NO_LORA = "None"
NOT_CONNECTED = "not connected"  # validate_inputs' default for an absent optional link (a link arrives as None)


def family_progress(sampling):
    """(progress map, sigma -> the value it reads) for a ComfyUI model_sampling, so that s is the inverse of
    its percent_to_sigma: Flux and SD3-style flows read sigma (shift included), the others their timestep."""
    if isinstance(sampling, comfy.model_sampling.ModelSamplingFlux):
        return FluxProgress(float(sampling.shift)), _identity
    if isinstance(sampling, comfy.model_sampling.ModelSamplingDiscreteFlow):
        return FlowProgress(float(sampling.shift)), _identity
    t_max = float(sampling.timestep(sampling.sigma_max.reshape(1)).reshape(-1)[0])
    t_min = float(sampling.timestep(sampling.sigma_min.reshape(1)).reshape(-1)[0])
    return TimestepProgress(t_max=t_max, t_min=t_min), sampling.timestep


def _identity(sigma):
    return sigma


class AIGCFGGuider(comfy.samplers.CFGGuider):
    """CFGGuider returning (1 - g) * CFG(base) + g * CFG(tuned), g = gamma(progress(sigma))."""

    def __init__(self, model_patcher, tuned: TunedRoute, schedule, tolerance: float = 0.0):
        super().__init__(tuned.guider_patcher(model_patcher))
        self.tuned = tuned
        self.schedule = schedule
        self.tolerance = tolerance
        self.calls = {"base": 0, "tuned": 0}  # branch evaluations, for tests and benchmarks

    def set_conds(self, positive, negative):
        # The tuned pair rides in self.conds through sample() and outer_sample(), which prepare every cond
        # group (weight hooks, ControlNets, model loading); inner_sample then processes it on its own.
        tuned_pos, tuned_neg = self.tuned.tuned_conds(positive, negative)
        self.inner_set_conds(
            {"positive": positive, "negative": negative, TUNED_KEYS[0]: tuned_pos, TUNED_KEYS[1]: tuned_neg}
        )

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed):
        # process_conds pairs areas across all groups it is given, so the tuned pair is processed apart
        tuned_conds = {"positive": self.conds.pop(TUNED_KEYS[0]), "negative": self.conds.pop(TUNED_KEYS[1])}
        latent_in = latent_image
        if latent_in is not None and latent_in.count_nonzero() > 0:
            latent_in = self.inner_model.process_latent_in(latent_in)
        model = self.tuned.tuned_inner_model(self.inner_model)
        self.tuned_conds = comfy.samplers.process_conds(model, noise, tuned_conds, device, latent_in, denoise_mask, seed)
        progress, self.noise_coordinate = family_progress(self.inner_model.model_sampling)
        log.info("AIG: %s model, gamma read at %s", type(self.inner_model).__name__, progress)
        self.weighting = AIGWeighting(self.schedule, progress, tolerance=self.tolerance)
        self.tuned_options = None  # the tuned branch's own model options (model route only)
        try:
            with self.tuned.running(self.inner_model, self.model_options, sigmas) as tuned_options:
                self.tuned_options = tuned_options
                return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                            disable_pbar, seed)
        finally:
            del self.tuned_conds, self.tuned_options

    def _plan(self, sigma):
        """The branch plan of one model call: gamma(progress(sigma)) per sample (core/aig.py)."""
        return self.weighting.plan(self.noise_coordinate(sigma))

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 - ComfyUI's signature
        """Denoised x0 of the mixed prediction at (x, sigma); a branch with weight 0 is not evaluated."""
        plan = self._plan(timestep)
        cfg1 = math.isclose(self.cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False)
        base_pair = (self.conds.get("positive"), None if cfg1 else self.conds.get("negative"))
        tuned_pair = (self.tuned_conds.get("positive"), None if cfg1 else self.tuned_conds.get("negative"))
        branches = self._one_batch if self.tuned.shares_base_weights else self._two_models
        base_out, tuned_out = branches(plan, base_pair, tuned_pair, x, timestep, model_options)
        self.calls["base"] += int(plan.run_base)
        self.calls["tuned"] += int(plan.run_tuned)
        return mix_predictions(base_out, tuned_out, plan)

    def _one_batch(self, plan, base_pair, tuned_pair, x, timestep, model_options):
        """Both branches in one calc_cond_batch over the base model; the tuned pair at TUNED_COND_INDICES."""
        none = (None, None)
        conds = [*(base_pair if plan.run_base else none), *(tuned_pair if plan.run_tuned else none)]
        out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        first = TUNED_COND_INDICES[0]
        base_out = self._cfg(self.inner_model, base_pair, out[:first], x, timestep, model_options) if plan.run_base else None
        tuned_out = self._cfg(self.inner_model, tuned_pair, out[first:], x, timestep, model_options) if plan.run_tuned else None
        return base_out, tuned_out

    def _two_models(self, plan, base_pair, tuned_pair, x, timestep, model_options):
        """Each branch through its own model and model options."""
        base_out = tuned_out = None
        if plan.run_base:
            out = comfy.samplers.calc_cond_batch(self.inner_model, list(base_pair), x, timestep, model_options)
            base_out = self._cfg(self.inner_model, base_pair, out, x, timestep, model_options)
        if plan.run_tuned:
            model, options = self.tuned.patcher.model, self.tuned_options
            out = comfy.samplers.calc_cond_batch(model, list(tuned_pair), x, timestep, options)
            tuned_out = self._cfg(model, tuned_pair, out, x, timestep, options)
        return base_out, tuned_out

    def _cfg(self, model, pair, out, x, timestep, model_options):
        """One branch's CFG exactly as ComfyUI's sampling_function does it (pre-CFG hooks, then cfg_function)."""
        out = list(out)
        conds = list(pair)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {"conds": conds, "conds_out": out, "cond_scale": self.cfg, "timestep": timestep,
                    "input": x, "sigma": timestep, "model": model, "model_options": model_options}
            out = fn(args)
        return comfy.samplers.cfg_function(model, out[0], out[1], self.cfg, x, timestep,
                                           model_options=model_options, cond=pair[0], uncond=pair[1])


def build_guider(model, positive, negative, cfg, tuned: TunedRoute, schedule, tolerance=0.0) -> AIGCFGGuider:
    """A ready AIGCFGGuider (conds and CFG set); logs which route evaluates the tuned model."""
    guider = AIGCFGGuider(model, tuned, schedule, tolerance)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    log.info("AIG guider: tuned model via %s route (%s), schedule %s", tuned.route, tuned.description,
             schedule.describe())
    return guider


def guider_from_inputs(model, positive, negative, cfg, tuned_model, lora_name, lora_strength, skip_tolerance,
                       lora_route, values) -> AIGCFGGuider:
    """Validated AIGCFGGuider from node inputs (raises AIGError/ScheduleError with the fix)."""
    schedule = schedule_from_values({k: values[k] for k in VALUE_NAMES if k in values})
    lora_path = None if lora_name in (None, NO_LORA) else str(model_file("loras", lora_name, "LoRA"))
    tuned = resolve_tuned(model, tuned_model=tuned_model, lora_path=lora_path, lora_strength=lora_strength,
                          lora_route=lora_route)
    return build_guider(model, positive, negative, cfg, tuned, schedule, check_tolerance(skip_tolerance))


BASE_MODEL_INPUT = dict(tooltip="Base model (the untuned checkpoint).")


def prompt_inputs() -> list:
    """positive and negative CONDITIONING, shared by both models."""
    return [io.Conditioning.Input("positive", tooltip="Positive prompt, used by both models."),
            io.Conditioning.Input("negative", tooltip="Negative prompt, used by both models.")]


def cfg_input() -> io.Float.Input:
    return io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                          tooltip="CFG scale applied to each model separately (1.0 = no guidance).")


def tuned_inputs() -> list:
    """The three ways to give the tuned model: a MODEL input, or a LoRA file + strength."""
    return [
        io.Model.Input(
            "tuned_model", optional=True,
            tooltip="Tuned model: LoraLoader(base) output or another checkpoint of the same architecture. "
            "Leave unconnected when a LoRA file is chosen below (neutral: unconnected).",
        ),
        ListedCombo(
            "lora_name", options=[NO_LORA, *folder_paths.get_filename_list("loras")], default=NO_LORA,
            tooltip="Tuned model as base + this LoRA file (from the loras folder; its diffusion-model weights "
            "only, text-encoder weights are not applied). 'None' = use tuned_model instead.",
        ),
        io.Float.Input(
            "lora_strength", default=1.0, min=-100.0, max=100.0, step=0.01,
            tooltip="Strength of the LoRA file, as in LoraLoader (1.0 = as trained; 0 is rejected).",
        ),
    ]


def tuned_problem(lora_name, tuned_model) -> str | None:
    """The message unless exactly one tuned model is given and a chosen LoRA file is in the loras folder."""
    if lora_name is None:  # linked: checked when the node runs
        return None
    if (lora_name == NO_LORA) == (tuned_model is NOT_CONNECTED):
        return ONE_TUNED_MODEL
    if lora_name != NO_LORA:
        try:
            model_file("loras", lora_name, "LoRA")
        except AIGInputError as error:
            return str(error)
    return None


class SamplingValidation:
    """validate_inputs of AIG Guider and AIG Sampler: exactly one tuned model. Only these two arguments, since
    ComfyUI repeats a failure on every argument: the window's order is checked when the node runs (and drawn
    on the node by the frontend), every range and choice by ComfyUI itself."""

    @classmethod
    def validate_inputs(cls, lora_name=None, tuned_model=NOT_CONNECTED):
        return tuned_problem(lora_name, tuned_model) or True


class AIGGuider(SamplingValidation, io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGGuider",
            display_name="AIG Guider (Annealed Importance Guidance)",
            category="AIG/sampling",
            description="Mixes the base and the tuned model at every step: (1 - g) * base + g * tuned, "
            "g = gamma(progress). Early noisy steps follow the base (diversity), late steps the tuned model (reward).",
            inputs=[
                io.Model.Input("model", **BASE_MODEL_INPUT),
                *prompt_inputs(),
                cfg_input(),
                *tuned_inputs(),
                *schedule_inputs(),
                tolerance_input(),
                lora_route_input(),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, lora_name, lora_strength, tuned_model=None,
                skip_tolerance=0.0, lora_route="auto", **values) -> io.NodeOutput:
        guider = guider_from_inputs(model, positive, negative, cfg, tuned_model, lora_name, lora_strength,
                                    skip_tolerance, lora_route, values)
        return io.NodeOutput(guider)


def ksampler_sigmas(model, steps, sampler_name, scheduler, denoise):
    """Sigmas exactly as ComfyUI's KSampler computes them (denoise and penultimate-sigma rules included)."""
    sampler = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                      scheduler=scheduler, denoise=denoise, model_options=model.model_options)
    return sampler.sigmas


class AIGSampler(SamplingValidation, io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGSampler",
            display_name="AIG Sampler (KSampler with Annealed Importance Guidance)",
            category="AIG/sampling",
            description="KSampler-style sampling with AIG: mixes base and tuned predictions by a schedule of "
            "sampling progress. Same result as AIG Guider + SamplerCustomAdvanced with KSampler's sigmas.",
            inputs=[
                io.Model.Input("model", **BASE_MODEL_INPUT),
                *tuned_inputs(),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed (any value; same seed = same noise as KSampler)."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps (20 is typical)."),
                cfg_input(),
                ListedCombo("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="Sampler, as in KSampler (every sampler works: weights follow sigma)."),
                ListedCombo("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="Noise schedule, as in KSampler."),
                *prompt_inputs(),
                io.Latent.Input("latent_image", tooltip="Latent to denoise (an Empty Latent Image for text-to-image)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the schedule to run (1.0 = full text-to-image)."),
                *schedule_inputs(),
                tolerance_input(),
                lora_route_input(),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, lora_name, lora_strength, seed, steps, cfg, sampler_name, scheduler, positive,
                negative, latent_image, denoise, tuned_model=None, skip_tolerance=0.0, lora_route="auto",
                **values) -> io.NodeOutput:
        guider = guider_from_inputs(model, positive, negative, cfg, tuned_model, lora_name, lora_strength,
                                    skip_tolerance, lora_route, values)
        latent = latent_image.copy()
        samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
        sigmas = ksampler_sigmas(model, steps, sampler_name, scheduler, denoise)
        callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
        out = guider.sample(noise, samples, comfy.samplers.sampler_object(sampler_name), sigmas,
                            denoise_mask=latent.get("noise_mask"), callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        latent["samples"] = out.to(comfy.model_management.intermediate_device())
        return io.NodeOutput(latent)


GUIDER_NODES = [AIGGuider, AIGSampler]
