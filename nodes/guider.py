"""AIGGuider (GUIDER for SamplerCustomAdvanced) and AIGSampler (one-node KSampler-style AIG sampling)."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview
from comfy_api.latest import io

from ..core.aig import AIGError, check_tolerance
from ..core.schedules import ScheduleError
from .aig_guider import LORA_ROUTES, build_guider, check_lora_route, resolve_tuned
from .folders import model_file
from .schedule_inputs import schedule_from_kwargs, schedule_inputs

NO_LORA = "None"
SCHEDULE_KEYS = ("schedule", "p", "switch", "centre", "width", "value", "window_start", "window_end")
SCHEDULE_DEFAULTS = {"schedule": "power", "p": 2.0, "switch": 0.5, "centre": 0.5, "width": 0.1, "value": 1.0,
                     "window_start": 0.0, "window_end": 1.0}


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
        io.Combo.Input(
            "lora_name", options=[NO_LORA, *folder_paths.get_filename_list("loras")], default=NO_LORA,
            tooltip="Tuned model as base + this LoRA file (from the loras folder; its diffusion-model weights "
            "only, text-encoder weights are not applied). 'None' = use tuned_model instead.",
        ),
        io.Float.Input(
            "lora_strength", default=1.0, min=-100.0, max=100.0, step=0.01,
            tooltip="Strength of the LoRA file, as in LoraLoader (1.0 = as trained; 0 is rejected).",
        ),
    ]


def tolerance_input() -> io.Float.Input:
    return io.Float.Input(
        "skip_tolerance", default=0.0, min=0.0, max=0.49, step=0.001, optional=True,
        tooltip="Skip a branch whose weight is within this of 0 (and the other within it of 1). "
        "0 = exact: skip only where the weight is exactly 0 or 1.",
    )


def lora_route_input() -> io.Combo.Input:
    return io.Combo.Input(
        "lora_route", options=list(LORA_ROUTES), default="auto", optional=True,
        tooltip="How a LoRA tuned model runs. auto: unmerged when it is a plain LoRA (base and tuned in one "
        "batched forward, no weight copies; equal to the merged LoRA up to float rounding), else weight hooks. "
        "bypass: unmerged or an error. hooks: merged through weight hooks, bit-identical to LoraLoader. "
        "Not used for a separate checkpoint.",
    )


def validate_values(values: dict) -> bool | str:
    """Check the schedule and tolerance widgets at /prompt time; linked (absent) values are checked at run time."""
    values = {k: v for k, v in values.items() if v is not None}
    try:
        if all(k in values for k in SCHEDULE_KEYS):
            schedule_from_kwargs(**{k: values[k] for k in SCHEDULE_KEYS})
        if "skip_tolerance" in values:
            check_tolerance(values["skip_tolerance"])
        if "lora_route" in values:
            check_lora_route(values["lora_route"])
    except (ScheduleError, AIGError) as error:
        return str(error)
    return True


class ScheduleValidation:
    """validate_inputs shared by the AIG nodes: schedule and tolerance widgets are checked at /prompt time."""

    @classmethod
    def validate_inputs(cls, schedule=None, p=None, switch=None, centre=None, width=None, value=None,
                        window_start=None, window_end=None, skip_tolerance=None, lora_route=None):
        # named arguments: ComfyUI attaches a failure to these inputs only and keeps its own min/max checks
        # for the others; a linked input arrives as None and is checked when the node runs
        return validate_values(dict(schedule=schedule, p=p, switch=switch, centre=centre, width=width, value=value,
                                    window_start=window_start, window_end=window_end,
                                    skip_tolerance=skip_tolerance, lora_route=lora_route))


def make_guider(model, positive, negative, cfg, tuned_model, lora_name, lora_strength, skip_tolerance, lora_route,
                values):
    """Validated AIGCFGGuider from node inputs (raises AIGError/ScheduleError with the fix)."""
    schedule = schedule_from_kwargs(**{k: values.get(k, SCHEDULE_DEFAULTS[k]) for k in SCHEDULE_KEYS})
    lora_path = None if lora_name in (None, NO_LORA) else str(model_file("loras", lora_name, "LoRA"))
    tuned = resolve_tuned(model, tuned_model=tuned_model, lora_path=lora_path, lora_strength=lora_strength,
                          lora_route=lora_route)
    return build_guider(model, positive, negative, cfg, tuned, schedule, check_tolerance(skip_tolerance))


class AIGGuider(ScheduleValidation, io.ComfyNode):
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
        guider = make_guider(model, positive, negative, cfg, tuned_model, lora_name, lora_strength,
                             skip_tolerance, lora_route, values)
        return io.NodeOutput(guider)


def ksampler_sigmas(model, steps, sampler_name, scheduler, denoise):
    """Sigmas exactly as ComfyUI's KSampler computes them (denoise and penultimate-sigma rules included)."""
    sampler = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                      scheduler=scheduler, denoise=denoise, model_options=model.model_options)
    return sampler.sigmas


class AIGSampler(ScheduleValidation, io.ComfyNode):
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
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="Sampler, as in KSampler (every sampler works: weights follow sigma)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
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
        guider = make_guider(model, positive, negative, cfg, tuned_model, lora_name, lora_strength,
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
