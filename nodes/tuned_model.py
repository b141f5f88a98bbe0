"""Tuned-model resolution for AIG: which route evaluates the tuned model, and what differs per route.

Exactly one tuned model is given: a LoRA file, a LoraLoader MODEL (base + LoRA, same weights) or a
separate checkpoint of the same architecture. It becomes one of three routes (LORA_ROUTES names
the first two, the only ones a user chooses between; docs/design.md section 3):
- BypassRoute ("bypass"): plain LoRA patches stay unmerged; base and tuned conditions run in one
  batched forward and forward hooks add scale * up(down(x)) to the tuned rows (nodes/lora_bypass.py).
  No weight copies. Matches the merged LoRA to float rounding, not bit for bit.
- HooksRoute ("hooks"): any patch type ComfyUI merges becomes a weight hook on a second copy of the
  conditioning; one calc_cond_batch runs both groups and ComfyUI's hook cache swaps the LoRA-targeted
  weights. Bit-identical to LoraLoader's merge; the base weights are restored after sampling.
- ModelRoute ("model"): a separate checkpoint, loaded by ComfyUI's memory manager as an additional
  model of the base; each branch runs its own forward.
The guider (nodes/guider.py) asks a route four things: the patcher to sample with, the tuned
conditions, the model that encodes them, and what to hold open while sampling runs.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import comfy.hooks
import comfy.model_patcher

from ..core.aig import AIGError
from .lora_bypass import LoraBypass, plan_bypass
from .lora_integrity import check_patches, lora_file_patches

log = logging.getLogger(__name__)

LORA_ROUTES = ("auto", "bypass", "hooks")  # the lora_route input: auto picks bypass when it can
ONE_TUNED_MODEL = ("give exactly one tuned model: connect 'tuned_model' (a LoraLoader output or another checkpoint) "
                   "or choose a 'lora_name', not both and not neither.")
TUNED_COND_INDICES = (2, 3)  # shared-weight routes batch [base +, base -, tuned +, tuned -] in one calc_cond_batch


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


@dataclass
class TunedRoute:
    """How the guider evaluates the tuned model; the defaults serve a LoRA on the base's own module."""

    description: str
    route = ""
    shares_base_weights = True  # both branches run in one calc_cond_batch over the base model

    def guider_patcher(self, base_patcher):
        """The ModelPatcher the guider samples with."""
        return base_patcher

    def tuned_conds(self, positive, negative):
        """The tuned branch's (positive, negative) conditioning."""
        return positive, negative

    def tuned_inner_model(self, base_inner_model):
        """The model whose extra_conds encode the tuned conditioning."""
        return base_inner_model

    def running(self, inner_model, model_options, sigmas):
        """Context held open while sampling runs; yields the tuned branch's model options (None: the call's)."""
        return contextlib.nullcontext()


@dataclass
class BypassRoute(TunedRoute):
    """Plain LoRA patches applied unmerged by forward hooks on the tuned rows of the batch."""

    bypass: LoraBypass = None
    route = "bypass"

    def running(self, inner_model, model_options, sigmas):
        # model_options is sample()'s own clone: the wrapper leaves with it
        return self.bypass.attached(inner_model, model_options, TUNED_COND_INDICES)


@dataclass
class HooksRoute(TunedRoute):
    """Any weight patches, merged by ComfyUI's weight hooks on a second copy of the conditioning."""

    hooks: comfy.hooks.HookGroup = None
    route = "hooks"

    def tuned_conds(self, positive, negative):
        cache = {}
        return (comfy.hooks.set_hooks_for_conditioning(positive, self.hooks, cache=cache),
                comfy.hooks.set_hooks_for_conditioning(negative, self.hooks, cache=cache))


@dataclass
class ModelRoute(TunedRoute):
    """A separate checkpoint of the same architecture, run as an additional model of the base."""

    patcher: object = None
    route = "model"
    shares_base_weights = False

    def guider_patcher(self, base_patcher):
        patcher = base_patcher.clone()
        patcher.set_additional_models("aig_tuned", [self.patcher])
        return patcher

    def tuned_inner_model(self, base_inner_model):
        return self.patcher.model

    @contextlib.contextmanager
    def running(self, inner_model, model_options, sigmas):
        options = comfy.model_patcher.create_model_options_clone(self.patcher.model_options)
        options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
        self.patcher.pre_run()
        try:
            yield options
        finally:
            self.patcher.cleanup()


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


def check_lora_route(lora_route: str) -> str:
    """lora_route itself, or AIGError naming the valid choices."""
    if lora_route not in LORA_ROUTES:
        raise AIGError(f"lora_route '{lora_route}' is not one of {', '.join(LORA_ROUTES)}.")
    return lora_route


def patch_route(base, entries, what: str, lora_route: str) -> BypassRoute | HooksRoute:
    """Weight patches on the base's module -> the bypass route where possible (or asked), else weight hooks.

    Every patch is checked first (nodes/lora_integrity.py): a partial or non-finite LoRA is an error."""
    check_lora_route(lora_route)
    check_patches(base.model, entries, what)
    if lora_route != "hooks":
        bypass, reason = plan_bypass(base.model, entries)
        if bypass is not None:
            return BypassRoute(f"{what}, unmerged ({len(bypass)} LoRA patches)", bypass=bypass)
        if lora_route == "bypass":
            raise AIGError(f"lora_route 'bypass' cannot run this LoRA unmerged: {reason}. Set lora_route to "
                           "'auto' or 'hooks' to merge it through weight hooks instead.")
        log.info("AIG guider: LoRA runs through weight hooks, not unmerged: %s", reason)
    return HooksRoute(f"{what}, weight hooks ({len(entries)} patches)", hooks=hook_from_patches(entries))


def resolve_tuned(base, tuned_model=None, lora_path: str | None = None, lora_strength: float = 1.0,
                  lora_route: str = "auto") -> TunedRoute:
    """Turn exactly one of (tuned MODEL, LoRA file) into a route; AIGError naming the problem otherwise.

    lora_route (LoRA file or LoraLoader MODEL only): 'auto' = unmerged when every patch is a plain LoRA,
    else weight hooks; 'bypass' = unmerged or an error; 'hooks' = weight hooks (bit-identical to LoraLoader).
    """
    if (tuned_model is None) == (lora_path is None):
        raise AIGError(ONE_TUNED_MODEL)
    if lora_path is not None:
        if lora_strength == 0:
            raise AIGError("lora_strength is 0, so the tuned model equals the base model; use a non-zero strength.")
        return patch_route(base, lora_file_patches(base, lora_path, lora_strength), "LoRA file", lora_route)
    if tuned_model.model is base.model:
        return patch_route(base, lora_delta_patches(base, tuned_model), "LoRA on base", lora_route)
    check_same_architecture(base, tuned_model)
    return ModelRoute("separate checkpoint", patcher=tuned_model)
