"""Typed training configuration for `comfy-aig train`: TOML presets, `--set section.key=value`, validation.

``TrainConfig`` has one dataclass per TOML section (model, lora, draft, reward, optim, train, output).
Every field carries a ``help`` text in its metadata; unknown sections/keys raise ``ConfigError`` listing
the valid ones; each section validates itself in ``__post_init__``. ``load_config(path, overrides)``
reads a TOML file (or a preset name from ``training/configs/``: "sd15", "sdxl") and applies overrides;
``config_to_dict`` gives the resolved config (saved with every checkpoint).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from ..core.errors import AIGInputError

PRESET_DIR = Path(__file__).parent / "configs"


class ConfigError(AIGInputError):
    """Invalid config: unknown key, bad value or type; the message names the key and the valid choices."""


def _f(default, help_text: str, **kw):
    """A dataclass field with documentation in its metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help_text}, **kw)
    return field(default=default, metadata={"help": help_text}, **kw)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _choice(section: str, name: str, value, choices) -> None:
    _check(value in choices, f"{section}.{name} = {value!r}; valid choices: {', '.join(map(str, choices))}")


@dataclass
class ModelConfig:
    """The base model to finetune."""

    path: str = _f("", "single-file checkpoint (.safetensors, original SD layout) or diffusers directory")
    kind: str = _f("auto", "auto | sd15 | sdxl (auto: detected from the checkpoint keys / model_index.json)")
    config_dir: str = _f("", "diffusers config folder for single files ('' = shipped SD1.5/SDXL configs)")
    resolution: int = _f(512, "image size in pixels (multiple of 8); 1024 for SDXL")
    prediction_type: str = _f("auto", "auto (scheduler config) | epsilon | v_prediction")
    weight_dtype: str = _f("auto", "dtype of the frozen weights: auto (bf16 on CUDA, else fp32) | fp32 | bf16 | fp16")

    def __post_init__(self):
        _choice("model", "kind", self.kind, ("auto", "sd15", "sdxl"))
        _choice("model", "prediction_type", self.prediction_type, ("auto", "epsilon", "v_prediction"))
        _choice("model", "weight_dtype", self.weight_dtype, ("auto", "fp32", "bf16", "fp16"))
        _check(self.resolution > 0 and self.resolution % 8 == 0,
               f"model.resolution = {self.resolution}; use a positive multiple of 8")


@dataclass
class LoraSection:
    """The peft LoRA adapter on the UNet (exported as a kohya LoRA)."""

    rank: int = _f(32, "LoRA rank r")
    alpha: float = _f(32.0, "LoRA alpha; the update is scaled by alpha / rank (ComfyUI strength 1 = this scale)")
    targets: list = _f(["to_q", "to_k", "to_v", "to_out.0"], "module name suffixes to adapt (peft target_modules)")
    init_from: str = _f("", "optional kohya LoRA to start from ('' = zero init, tuned model == base)")

    def __post_init__(self):
        _check(self.rank >= 1, f"lora.rank = {self.rank}; use an integer >= 1")
        _check(self.alpha > 0, f"lora.alpha = {self.alpha}; use a positive number")
        _check(bool(self.targets) and all(isinstance(t, str) for t in self.targets),
               "lora.targets must be a non-empty list of module names, e.g. ['to_q', 'to_k', 'to_v', 'to_out.0']")


@dataclass
class DraftSection:  # also draft.DraftSettings: the settings of one draft_step
    """DRaFT algorithm (Clark et al. 2023) and KL regulariser (Jena et al. 2024)."""

    steps: int = _f(50, "DDIM sampling steps T")
    guidance_scale: float = _f(7.5, "classifier-free guidance scale (1 = no CFG)")
    k: int = _f(1, "DRaFT-K: gradient through the last K steps (max K with random_k)")
    random_k: bool = _f(False, "draw K uniformly from 1..k each step (AlignProp style)")
    lv: int = _f(0, "DRaFT-LV re-noisings n of the final step (0 = off; 2 is the paper's choice)")
    kl_weight: float = _f(0.0, "lambda of the KL term mean (eps_tuned - sg(eps_base))^2 (0 = off)")
    track_kl: bool = _f(True, "log the KL term even when kl_weight = 0 (one extra base call per grad step)")
    checkpoint: bool = _f(True, "non-reentrant activation checkpointing of gradient-carrying UNet calls")
    negative_prompt: str = _f("", "negative / unconditional prompt for CFG")

    def __post_init__(self):
        _check(self.steps >= 1, f"draft.steps = {self.steps}; use >= 1")
        _check(1 <= self.k <= self.steps,
               f"draft.k = {self.k}; use 1..draft.steps ({self.steps}): k must be in 1..steps")
        _check(self.lv >= 0, f"draft.lv = {self.lv}; use >= 0 (0 disables DRaFT-LV)")
        _check(self.kl_weight >= 0, f"draft.kl_weight = {self.kl_weight}; use >= 0")
        _check(self.guidance_scale >= 1.0, f"draft.guidance_scale = {self.guidance_scale}; use >= 1")


@dataclass
class RewardSection:
    """Reward r(x, c): weighted sum of terms."""

    terms: list = _f([], "list of {source, weight, kind}: source = a local reward model path "
                         "(comfy_aig.core.rewards.load_reward_model) or 'builtin:<name>' (toy colour rewards)")

    def __post_init__(self):
        _check(isinstance(self.terms, list), "reward.terms must be a list of tables {source, weight, kind}")
        for i, term in enumerate(self.terms):
            _check(isinstance(term, dict), f"reward.terms[{i}] must be a table {{source, weight, kind}}")
            unknown = set(term) - {"source", "weight", "kind"}
            _check(not unknown, f"reward.terms[{i}] has unknown keys {sorted(unknown)}; valid: source, weight, kind")
            _check(isinstance(term.get("source"), str) and term["source"] != "",
                   f"reward.terms[{i}] needs a 'source' (model path or builtin:<name>)")


@dataclass
class OptimSection:
    """AdamW and learning-rate schedule."""

    lr: float = _f(1e-4, "peak learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    betas: list = _f([0.9, 0.999], "AdamW betas")
    eps: float = _f(1e-8, "AdamW epsilon")
    warmup_steps: int = _f(0, "linear warmup optimizer steps")
    schedule: str = _f("constant", "constant | cosine (after warmup)")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)")
    grad_accum: int = _f(1, "micro-batches accumulated per optimizer step")

    def __post_init__(self):
        _check(self.lr > 0, f"optim.lr = {self.lr}; use a positive number")
        _choice("optim", "schedule", self.schedule, ("constant", "cosine"))
        _check(self.warmup_steps >= 0 and self.grad_accum >= 1 and self.max_grad_norm >= 0,
               "optim.warmup_steps >= 0, optim.grad_accum >= 1 and optim.max_grad_norm >= 0 are required")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"optim.betas = {self.betas}")


@dataclass
class TrainSection:
    """Run length, data and precision."""

    max_steps: int = _f(1000, "optimizer steps to train")
    batch_size: int = _f(1, "prompts per micro-batch per process")
    prompts_file: str = _f("", "text file, one prompt per line (blank lines and '#' comments ignored)")
    seed: int = _f(0, "base seed (each rank adds its rank; noise and prompts are reproducible)")
    mixed_precision: str = _f("auto", "auto (bf16 autocast on CUDA) | no | bf16")
    device: str = _f("auto", "auto | cpu | cuda")

    def __post_init__(self):
        _check(self.max_steps >= 1 and self.batch_size >= 1, "train.max_steps and train.batch_size must be >= 1")
        _choice("train", "mixed_precision", self.mixed_precision, ("auto", "no", "bf16"))
        _choice("train", "device", self.device, ("auto", "cpu", "cuda"))


@dataclass
class OutputSection:
    """Checkpoints, logs and the sample grid."""

    dir: str = _f("runs/draft", "output directory (checkpoints/, metrics.jsonl, samples/, lora_final.safetensors)")
    checkpoint_every: int = _f(100, "save a resumable checkpoint every N optimizer steps (0 = only at the end)")
    keep_checkpoints: int = _f(3, "checkpoints kept on disk (oldest removed)")
    sample_every: int = _f(100, "sample grid every N steps (0 = off)")
    sample_prompts: int = _f(8, "first N prompts of the prompt file used for the sample grid")
    sample_seed: int = _f(1234, "seed of the fixed sample-grid noise")
    tensorboard: bool = _f(False, "also log to tensorboard (needs the tensorboard package)")

    def __post_init__(self):
        _check(self.checkpoint_every >= 0 and self.sample_every >= 0 and self.keep_checkpoints >= 1,
               "output.checkpoint_every/sample_every must be >= 0 and output.keep_checkpoints >= 1")


@dataclass
class TrainConfig:
    """The whole training configuration (one field per TOML section)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    draft: DraftSection = field(default_factory=DraftSection)
    reward: RewardSection = field(default_factory=RewardSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputSection = field(default_factory=OutputSection)


def _section_types(root: type | None = None) -> dict[str, type]:
    """{section name: section dataclass} of a root config dataclass (TrainConfig unless given)."""
    return {f.name: f.default_factory for f in dataclasses.fields(root or TrainConfig)}


def _coerce(section: str, f: dataclasses.Field, value):
    """Check a value against a field's default type (int -> float allowed)."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{section}.{f.name} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def config_from_dict(data: dict, root: type | None = None):
    """Build and validate a root config (TrainConfig unless given); unknown sections or keys are errors
    listing the valid ones."""
    root = root or TrainConfig
    sections = _section_types(root)
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid sections: {', '.join(sections)}")
    built = {}
    for name, cls in sections.items():
        values = data.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table of keys, got {values!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - set(fields))
        if bad:
            raise ConfigError(f"unknown key(s) {bad} in [{name}]; valid keys: {', '.join(fields)}")
        built[name] = cls(**{k: _coerce(name, fields[k], v) for k, v in values.items()})
    return root(**built)


def config_to_dict(config: TrainConfig) -> dict:
    """The resolved config as plain data (JSON/TOML-serialisable)."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[str, str, object]:
    """'section.key=value' -> (section, key, value); value parsed as TOML, else kept as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: use section.key=value, e.g. --set optim.lr=5e-5")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def resolve_preset(name_or_path: str) -> Path:
    """A TOML path, or a preset name ('sd15', 'sdxl') in training/configs/."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.toml"
    if preset.is_file():
        return preset
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
    raise FileNotFoundError(f"config {name_or_path!r} is neither a file nor a preset; presets: {', '.join(presets)}")


def read_config_data(path: str | None, overrides: list[str] = ()) -> dict:
    """The TOML of a config file or preset with `section.key=value` overrides applied (not yet validated)."""
    data: dict = {}
    if path:
        try:
            data = tomllib.loads(resolve_preset(path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config {path} is not valid TOML ({error}); fix the line it names") from None
    for text in overrides:
        section, key, value = parse_override(text)
        data.setdefault(section, {})[key] = value
    return data


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a TOML config (or preset) and apply `section.key=value` overrides; validated."""
    return config_from_dict(read_config_data(path, overrides))


def describe_fields(root: type | None = None) -> str:
    """Human-readable reference of every section and key with its default and help text."""
    lines = []
    for name, cls in _section_types(root).items():
        lines.append(f"[{name}]  {cls.__doc__}")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {f.name} = {default!r}  # {f.metadata['help']}")
    return "\n".join(lines)
