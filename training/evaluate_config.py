"""Typed sweep configuration for `comfy-aig evaluate`: TOML presets, `--set section.key=value`, validation.

``EvalConfig`` has one dataclass per TOML section (model, lora, methods, prompts, sampling, metrics, output),
built with the same field helpers, type coercion, override syntax and preset lookup as `comfy-aig train`
(``training/config.py``); unknown sections/keys raise ``ConfigError`` listing the valid ones. Presets live in
``training/configs/`` ("sweep_sd15"). Files are checked for existence later, by ``sweep.build_plan``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..core.diversity import METRIC_KEYS
from ..core.schedules import PARAMETERS, VALUE_NAMES, WINDOW
from .config import _check, _choice, _f, config_from_dict, describe_fields, read_config_data

X_METRICS = tuple(m for m in METRIC_KEYS if m != "vendi_ref")  # as the AIGEvalReport node offers
FEATURE_KINDS = ("pixels", "inception", "reward")
AIG_KEYS = (*VALUE_NAMES, "label")


@dataclass
class EvalModelSection:
    """The base model every method samples from."""

    path: str = _f("", "single-file checkpoint (.safetensors, original SD layout) or diffusers directory")
    kind: str = _f("auto", "auto | sd15 | sdxl (auto: detected from the checkpoint keys / model_index.json)")
    config_dir: str = _f("", "diffusers config folder for single files ('' = shipped SD1.5/SDXL configs)")
    resolution: int = _f(0, "image size in pixels (multiple of 8; 0 = the model's native size)")
    prediction_type: str = _f("auto", "auto (scheduler config) | epsilon | v_prediction")
    weight_dtype: str = _f("auto", "auto (bf16 on CUDA, else fp32) | fp32 | bf16 | fp16; not fp32 = autocast")
    device: str = _f("auto", "auto | cpu | cuda (under torchrun each rank takes cuda:LOCAL_RANK)")

    def __post_init__(self):
        _choice("model", "kind", self.kind, ("auto", "sd15", "sdxl"))
        _choice("model", "prediction_type", self.prediction_type, ("auto", "epsilon", "v_prediction"))
        _choice("model", "weight_dtype", self.weight_dtype, ("auto", "fp32", "bf16", "fp16"))
        _choice("model", "device", self.device, ("auto", "cpu", "cuda"))
        _check(self.resolution >= 0 and self.resolution % 8 == 0,
               f"model.resolution = {self.resolution}; use 0 (native) or a positive multiple of 8")


@dataclass
class EvalLoraSection:
    """The reward-tuned LoRA (DRaFT) and optional KL-regularised LoRAs, all kohya .safetensors files."""

    tuned: str = _f("", "the tuned LoRA (e.g. runs/draft_sd15/lora_final.safetensors); needed by tuned, "
                        "lora_scales and aig methods")
    kl: list = _f([], "KL-trained LoRAs to compare, each its own label 'kl:<name>': [{name, path}]")

    def __post_init__(self):
        names = []
        for i, entry in enumerate(self.kl):
            _check(isinstance(entry, dict) and set(entry) == {"name", "path"},
                   f"lora.kl[{i}] must be a table {{name = \"0.1\", path = \"runs/kl_0.1/lora_final.safetensors\"}}")
            _check(isinstance(entry["name"], str) and entry["name"].strip() != "" and isinstance(entry["path"], str),
                   f"lora.kl[{i}]: name and path must be non-empty strings")
            names.append(entry["name"])
        _check(len(set(names)) == len(names), f"lora.kl names must be distinct, got {names}")


@dataclass
class MethodsSection:
    """What to sample: labels follow the ComfyUI nodes' convention ('base', 'lora:0.5', 'aig:p=2', 'kl:<name>')."""

    base: bool = _f(True, "the base model, label 'base' (the usual reference)")
    tuned: bool = _f(True, "the tuned LoRA at strength 1, label 'lora:1'")
    lora_scales: list = _f([], "LoRA scaling baseline W + a dW, one label 'lora:<a>' each, e.g. [0.25, 0.5, 0.75]")
    aig: list = _f([], "AIG schedules: tables of core/schedules.py values {schedule, <its parameters>, "
                       "window_start, window_end, label}, e.g. [{schedule = \"power\", p = 2}]")
    kl: bool = _f(True, "every lora.kl entry, label 'kl:<name>'")

    def __post_init__(self):
        for i, scale in enumerate(self.lora_scales):
            _check(isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale >= 0,
                   f"methods.lora_scales[{i}] = {scale!r}; use numbers >= 0, e.g. [0.25, 0.5, 0.75]")
        for i, entry in enumerate(self.aig):
            _check(isinstance(entry, dict), f"methods.aig[{i}] must be a table, e.g. {{schedule = \"power\", p = 2}}")
            unknown = sorted(set(entry) - set(AIG_KEYS))
            _check(not unknown, f"methods.aig[{i}] has unknown keys {unknown}; valid: {', '.join(AIG_KEYS)}")


@dataclass
class PromptsSection:
    """The prompt set and how many images each method makes per prompt."""

    file: str = _f("", "PartiPrompts .tsv (column 'Prompt', optional 'Category') or .txt, one prompt per line")
    categories: list = _f([], "keep only these values of the .tsv Category column, e.g. ['Animals'] ([] = all)")
    limit: int = _f(0, "use only the first N prompts after the category filter (0 = all)")
    images_per_prompt: int = _f(1, "images per (prompt, seed) and method: batch indices 0..N-1 of one record")
    seeds: list = _f([0], "seeds; image i of prompt j with seed s starts from noise seeded by (s, j, i)")

    def __post_init__(self):
        _check(self.limit >= 0, f"prompts.limit = {self.limit}; use 0 (all) or a positive count")
        _check(self.images_per_prompt >= 1, f"prompts.images_per_prompt = {self.images_per_prompt}; use >= 1")
        _check(bool(self.seeds) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds),
               f"prompts.seeds = {self.seeds!r}; use a non-empty list of integers >= 0, e.g. [0, 1]")
        _check(len(set(self.seeds)) == len(self.seeds), f"prompts.seeds = {self.seeds}; seeds must be distinct")
        _check(all(isinstance(c, str) for c in self.categories), "prompts.categories must be a list of strings")


@dataclass
class EvalSamplingSection:
    """The DDIM sampler shared by every method (training.sampling.sample)."""

    steps: int = _f(50, "DDIM steps")
    guidance_scale: float = _f(7.5, "classifier-free guidance scale (1 = no CFG)")
    negative_prompt: str = _f("", "negative / unconditional prompt for CFG")
    batch_size: int = _f(8, "images per sampler call (items of one method are grouped up to this many images)")

    def __post_init__(self):
        _check(self.steps >= 1, f"sampling.steps = {self.steps}; use >= 1")
        _check(self.guidance_scale >= 1.0, f"sampling.guidance_scale = {self.guidance_scale}; use >= 1")
        _check(self.batch_size >= 1, f"sampling.batch_size = {self.batch_size}; use >= 1")


@dataclass
class MetricsSection:
    """Rewards and image features stored per image, and the report built from them."""

    reward: list = _f([], "reward terms like train's reward.terms: [{source, weight, kind}], source a local "
                          "reward model path or 'builtin:<name>' ([] = no rewards, no plot)")
    features: str = _f("inception", "pixels | inception (FID pool3, features_path = weights file) | reward "
                                    "(image embedding of the reward/CLIP model at features_path)")
    features_path: str = _f("", "FID Inception weights (pt_inception-2015-12-05-*.pth) or a reward/CLIP model")
    features_kind: str = _f("auto", "reward-model kind for features = 'reward' (auto, pickscore, clipscore, ...)")
    pixel_size: int = _f(16, "features = 'pixels': side of the downsampled image (16 -> 768 features)")
    reference: str = _f("base", "label the report compares every label against")
    k: int = _f(5, "neighbours for precision/recall (5 as in the paper)")
    x_metric: str = _f("scd", f"diversity metric on the plot's x axis: {' | '.join(X_METRICS)}")

    def __post_init__(self):
        _choice("metrics", "features", self.features, FEATURE_KINDS)
        _choice("metrics", "x_metric", self.x_metric, X_METRICS)
        _check(self.k >= 1 and self.pixel_size >= 2, "metrics.k must be >= 1 and metrics.pixel_size >= 2")
        _check(self.reference.strip() != "", "metrics.reference is empty; use the base label 'base'")
        for i, term in enumerate(self.reward):
            _check(isinstance(term, dict) and isinstance(term.get("source"), str) and term["source"] != ""
                   and not set(term) - {"source", "weight", "kind"},
                   f"metrics.reward[{i}] must be a table {{source, weight, kind}} with a non-empty source")


@dataclass
class EvalOutputSection:
    """Where the evaluation set lives: <dir>/<set>, core/evalset's layout (ComfyUI: output/aig_eval/<set>)."""

    dir: str = _f("eval", "root folder of evaluation sets (point it at ComfyUI/output/aig_eval to share sets)")
    set: str = _f("sweep", "evaluation set name (a plain folder name, as AIGEvalCollect's set_name)")


@dataclass
class EvalConfig:
    """The whole sweep configuration (one field per TOML section)."""

    model: EvalModelSection = field(default_factory=EvalModelSection)
    lora: EvalLoraSection = field(default_factory=EvalLoraSection)
    methods: MethodsSection = field(default_factory=MethodsSection)
    prompts: PromptsSection = field(default_factory=PromptsSection)
    sampling: EvalSamplingSection = field(default_factory=EvalSamplingSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    output: EvalOutputSection = field(default_factory=EvalOutputSection)


def eval_config_from_dict(data: dict) -> EvalConfig:
    """Build and validate an EvalConfig; unknown sections or keys are ConfigErrors listing the valid ones."""
    return config_from_dict(data, EvalConfig)


def load_eval_config(path: str | None, overrides: list[str] = ()) -> EvalConfig:
    """Read a TOML sweep config (or preset) and apply `section.key=value` overrides; validated."""
    return eval_config_from_dict(read_config_data(path, overrides))


def eval_config_to_dict(config: EvalConfig) -> dict:
    """The resolved config as plain data (stored in the report metadata)."""
    return dataclasses.asdict(config)


def describe_eval_fields() -> str:
    """Human-readable reference of every section and key with its default and help text."""
    return describe_fields(EvalConfig) + (
        f"\n  methods.aig keys: {', '.join(AIG_KEYS)}; parameters: "
        + ", ".join(f"{n} (default {p.default:g})" for n, p in PARAMETERS.items())
        + f"; window {WINDOW[0].name}/{WINDOW[1].name} in [0, 1]")
