"""AIGCFGGuider: a ComfyUI CFGGuider that mixes base and tuned predictions, (1 - g) * base + g * tuned.

Three routes evaluate the tuned model (DESIGN.md section 3):
- "bypass" (LoRA file or LoraLoader MODEL, plain LoRA patches): the LoRA stays unmerged; base and tuned
  conditions run in one batched forward and forward hooks add scale * up(down(x)) to the tuned rows
  (nodes/lora_bypass.py). No weight copies. Matches the merged LoRA to float rounding, not bit for bit.
- "hook": the tuned model is the base plus weight patches (any patch type ComfyUI merges). The patches
  become a weight hook on a second copy of the conditioning; one calc_cond_batch call runs the base group
  and the hooked group, and ComfyUI's hook cache makes the switch a copy of the LoRA-targeted weights.
  Bit-identical to LoraLoader's merge; the base weights are restored after sampling.
- "model": the tuned model is another checkpoint of the same architecture; both are loaded by
  ComfyUI's memory manager (the tuned one as an additional model) and each runs its own forward.
The weight g = gamma(progress(sigma)) comes from comfy_aig.core.aig; each branch keeps its own CFG
through ComfyUI's cfg_function, so sampler CFG patches still apply.

Known limits: ComfyUI's own bypass LoRA loader (`comfy.sd.load_bypass_lora_for_models`, newer than
0.3.6x) is not used: our bypass works on any ComfyUI with APPLY_MODEL wrappers. In the hook and bypass
routes the base model's model_options (CFG patches, FreeU...) serve both branches. "*_cfg_pp" samplers
read uncond_denoised through a post-CFG hook, which runs per branch, so they see the last evaluated
branch's uncond rather than a mixed one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import comfy.hooks
import comfy.model_patcher
import comfy.samplers

from ..core.aig import AIGError, AIGWeighting, mix_predictions
from .lora_bypass import LoraBypass, plan_bypass
from .lora_integrity import check_patches, lora_file_patches

log = logging.getLogger(__name__)

TUNED_KEYS = ("aig_tuned_positive", "aig_tuned_negative")
LORA_ROUTES = ("auto", "bypass", "hooks")
TUNED_COND_INDICES = (2, 3)  # position of the tuned pair in the conds list given to calc_cond_batch


class AIGPatchHook(comfy.hooks.WeightHook):
    """A WeightHook that carries already-loaded weight patches with their own strengths."""

    def __init__(self, patch_groups=None):
        super().__init__()
        self.patch_groups = patch_groups or []  # [((strength_patch, strength_model), {key: patch})]
        self.need_weight_init = False

    def add_hook_patches(self, model, model_options, target_dict, registered):
        if not self.should_register(model, model_options, target_dict, registered):
            return False
        if target_dict.get("target") == comfy.hooks.EnumWeightTarget.Clip:
            return False
        for (strength_patch, strength_model), patches in self.patch_groups:
            model.add_hook_patches(hook=self, patches=patches, strength_patch=strength_patch, strength_model=strength_model)
        registered.add(self)
        return True

    def clone(self):
        c = super().clone()
        c.patch_groups = self.patch_groups
        return c


def _group_patches(entries):
    """[(key, (strength_patch, value, strength_model, offset, function))] -> patch groups, one patch per key each."""
    groups: dict[tuple, dict] = {}
    depth: dict[str, int] = {}
    for key, (strength_patch, value, strength_model, offset, function) in entries:
        index = depth.get(key, 0)
        depth[key] = index + 1
        patch_key = key if offset is None and function is None else (key, offset, function)
        groups.setdefault((strength_patch, strength_model, index), {})[patch_key] = value
    return [((sp, sm), patches) for (sp, sm, _), patches in groups.items()]


def hook_from_patches(entries) -> comfy.hooks.HookGroup:
    """A HookGroup holding one AIGPatchHook with the given weight patches."""
    group = comfy.hooks.HookGroup()
    group.add(AIGPatchHook(_group_patches(entries)))
    return group


def lora_delta_patches(base, tuned):
    """Weight patches that `tuned` (a LoraLoader clone of `base`) adds on top of `base`'s own patches."""
    entries = []
    for key, tuned_list in tuned.patches.items():
        base_list = base.patches.get(key, [])
        if len(tuned_list) < len(base_list) or any(a is not b for a, b in zip(tuned_list, base_list)):
            raise AIGError(
                f"the tuned MODEL shares the base model's weights but is not 'base + LoRA' (patches on {key} "
                "differ from the base's): connect the tuned model as LoraLoader(base MODEL) or give the LoRA file."
            )
        entries.extend((key, patch) for patch in tuned_list[len(base_list):])
    missing = [k for k in base.patches if k not in tuned.patches]
    if missing:
        raise AIGError(f"the tuned MODEL lacks weight patches the base has (e.g. {missing[0]}): it is not 'base + LoRA'.")
    if not entries:
        raise AIGError(
            "the tuned MODEL has no weight patches beyond the base model: its LoRA matched none of the model's "
            "keys or its strength is 0, so AIG would only reproduce the base model. Check the LoRA file and strength."
        )
    return entries


def check_same_architecture(base, tuned) -> None:
    """AIGError when two ModelPatchers are not the same diffusion architecture."""
    a, b = base.model, tuned.model
    same = type(a) is type(b) and type(a.model_config) is type(b.model_config)
    same = same and type(a.latent_format) is type(b.latent_format)
    if same:
        ca, cb = dict(a.model_config.unet_config), dict(b.model_config.unet_config)
        same = {k: v for k, v in ca.items() if k != "dtype"} == {k: v for k, v in cb.items() if k != "dtype"}
    if not same:
        raise AIGError(
            f"the tuned model's architecture ({type(b.model_config).__name__}, {type(b).__name__}) differs from "
            f"the base model's ({type(a.model_config).__name__}, {type(a).__name__}): AIG mixes two models of the "
            "same architecture. Load a tuned checkpoint or LoRA made for the base model."
        )


@dataclass
class TunedSource:
    """How the tuned model is evaluated: route 'bypass' (bypass: LoraBypass), 'hook' (hooks: HookGroup)
    or 'model' (patcher: ModelPatcher)."""

    route: str
    hooks: comfy.hooks.HookGroup | None = None
    patcher: object | None = None
    bypass: LoraBypass | None = None
    description: str = ""


def check_lora_route(lora_route: str) -> str:
    """lora_route itself, or AIGError naming the valid choices."""
    if lora_route not in LORA_ROUTES:
        raise AIGError(f"lora_route '{lora_route}' is not one of {', '.join(LORA_ROUTES)}.")
    return lora_route


def patch_source(base, entries, what: str, lora_route: str) -> TunedSource:
    """Weight patches on the base's module -> the bypass route where possible (or asked), else weight hooks.

    Every patch is checked first (nodes/lora_integrity.py): a partial or non-finite LoRA is an error."""
    check_lora_route(lora_route)
    check_patches(base.model, entries, what)
    if lora_route != "hooks":
        bypass, reason = plan_bypass(base.model, entries)
        if bypass is not None:
            return TunedSource("bypass", bypass=bypass, description=f"{what}, unmerged ({len(bypass)} LoRA patches)")
        if lora_route == "bypass":
            raise AIGError(f"lora_route 'bypass' cannot run this LoRA unmerged: {reason}. Set lora_route to "
                           "'auto' or 'hooks' to merge it through weight hooks instead.")
        log.info("AIG guider: LoRA runs through weight hooks, not unmerged: %s", reason)
    return TunedSource("hook", hooks=hook_from_patches(entries), description=f"{what}, weight hooks ({len(entries)} patches)")


def resolve_tuned(base, tuned_model=None, lora_path: str | None = None, lora_strength: float = 1.0,
                  lora_route: str = "auto") -> TunedSource:
    """Turn exactly one of (tuned MODEL, LoRA file) into a TunedSource; AIGError naming the problem otherwise.

    lora_route (LoRA file or LoraLoader MODEL only): 'auto' = unmerged when every patch is a plain LoRA,
    else weight hooks; 'bypass' = unmerged or an error; 'hooks' = weight hooks (bit-identical to LoraLoader).
    """
    if (tuned_model is None) == (lora_path is None):
        raise AIGError(
            "give exactly one tuned model: connect 'tuned_model' (a LoraLoader output or another checkpoint) "
            "or choose a 'lora_name', not both and not neither."
        )
    if lora_path is not None:
        if lora_strength == 0:
            raise AIGError("lora_strength is 0, so the tuned model equals the base model; use a non-zero strength.")
        return patch_source(base, lora_file_patches(base, lora_path, lora_strength), "LoRA file", lora_route)
    if tuned_model.model is base.model:
        return patch_source(base, lora_delta_patches(base, tuned_model), "LoRA on base", lora_route)
    check_same_architecture(base, tuned_model)
    return TunedSource("model", patcher=tuned_model, description="separate checkpoint")


class AIGCFGGuider(comfy.samplers.CFGGuider):
    """CFGGuider returning (1 - g) * CFG(base) + g * CFG(tuned), g = gamma(progress(sigma))."""

    def __init__(self, model_patcher, tuned: TunedSource, schedule, tolerance: float = 0.0):
        if tuned.route == "model":
            model_patcher = model_patcher.clone()
            model_patcher.set_additional_models("aig_tuned", [tuned.patcher])
        super().__init__(model_patcher)
        self.tuned = tuned
        self.schedule = schedule
        self.tolerance = tolerance
        self.calls = {"base": 0, "tuned": 0}  # branch evaluations, for tests and benchmarks

    def set_conds(self, positive, negative):
        tuned_pos, tuned_neg = positive, negative
        if self.tuned.route == "hook":  # bypass: the tuned pair is a plain copy, batched with the base pair
            cache = {}
            tuned_pos = comfy.hooks.set_hooks_for_conditioning(positive, self.tuned.hooks, cache=cache)
            tuned_neg = comfy.hooks.set_hooks_for_conditioning(negative, self.tuned.hooks, cache=cache)
        self.inner_set_conds(
            {"positive": positive, "negative": negative, TUNED_KEYS[0]: tuned_pos, TUNED_KEYS[1]: tuned_neg}
        )

    def _tuned_inner_model(self):
        return self.tuned.patcher.model if self.tuned.route == "model" else self.inner_model

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed):
        # process the tuned pair on its own, so area conds are not mirrored across the two branches
        tuned_conds = {"positive": self.conds.pop(TUNED_KEYS[0]), "negative": self.conds.pop(TUNED_KEYS[1])}
        latent_in = latent_image
        if latent_in is not None and latent_in.count_nonzero() > 0:
            latent_in = self.inner_model.process_latent_in(latent_in)
        model = self._tuned_inner_model()
        self.tuned_conds = comfy.samplers.process_conds(model, noise, tuned_conds, device, latent_in, denoise_mask, seed)
        sampling = self.inner_model.model_sampling
        t_max = float(sampling.timestep(sampling.sigma_max.reshape(1)).reshape(-1)[0])
        self.weighting = AIGWeighting(self.schedule, t_max=t_max, t_min=0.0, tolerance=self.tolerance)
        self.tuned_options = None
        if self.tuned.route == "model":
            self.tuned_options = comfy.model_patcher.create_model_options_clone(self.tuned.patcher.model_options)
            self.tuned_options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
            self.tuned.patcher.pre_run()
        try:
            if self.tuned.route != "bypass":
                return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                            disable_pbar, seed)
            # self.model_options is sample()'s own clone: the wrapper leaves with it
            with self.tuned.bypass.attached(self.inner_model, self.model_options, TUNED_COND_INDICES):
                return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                            disable_pbar, seed)
        finally:
            del self.tuned_conds
            if self.tuned.route == "model":
                self.tuned.patcher.cleanup()

    def _plan(self, sigma):
        timesteps = self.inner_model.model_sampling.timestep(sigma)
        return self.weighting.plan(timesteps)

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 - ComfyUI's signature
        """Denoised x0 of the mixed prediction at (x, sigma); a branch with weight 0 is not evaluated."""
        plan = self._plan(timestep)
        cfg1 = math.isclose(self.cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False)
        base_pair = (self.conds.get("positive"), None if cfg1 else self.conds.get("negative"))
        tuned_pair = (self.tuned_conds.get("positive"), None if cfg1 else self.tuned_conds.get("negative"))
        base_out = tuned_out = None
        if self.tuned.route in ("hook", "bypass"):  # one calc_cond_batch; tuned pair at TUNED_COND_INDICES
            conds = [*(base_pair if plan.run_base else (None, None)), *(tuned_pair if plan.run_tuned else (None, None))]
            out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
            if plan.run_base:
                base_out = self._cfg(self.inner_model, base_pair, out[0:2], x, timestep, model_options)
            if plan.run_tuned:
                tuned_out = self._cfg(self.inner_model, tuned_pair, out[2:4], x, timestep, model_options)
        else:
            if plan.run_base:
                out = comfy.samplers.calc_cond_batch(self.inner_model, list(base_pair), x, timestep, model_options)
                base_out = self._cfg(self.inner_model, base_pair, out, x, timestep, model_options)
            if plan.run_tuned:
                model, options = self.tuned.patcher.model, self.tuned_options
                out = comfy.samplers.calc_cond_batch(model, list(tuned_pair), x, timestep, options)
                tuned_out = self._cfg(model, tuned_pair, out, x, timestep, options)
        self.calls["base"] += int(plan.run_base)
        self.calls["tuned"] += int(plan.run_tuned)
        return mix_predictions(base_out, tuned_out, plan)

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


def build_guider(model, positive, negative, cfg, tuned: TunedSource, schedule, tolerance=0.0) -> AIGCFGGuider:
    """A ready AIGCFGGuider (conds and CFG set); logs which route evaluates the tuned model."""
    guider = AIGCFGGuider(model, tuned, schedule, tolerance)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    log.info("AIG guider: tuned model via %s route (%s), schedule %s", tuned.route, tuned.description,
             schedule.describe())
    return guider
