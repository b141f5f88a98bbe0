"""The work of one `comfy-aig evaluate` sweep: methods, prompts, items, their record names and the rank split.

An *item* is (method, prompt, seed): ``prompts.images_per_prompt`` images, stored as one evaluation record
(core/evalset, the AIGEvalCollect format: rows share the prompt and seed, batch indices 0..N-1). Its record
is ``run-sweep-<method key>-p<prompt index>-<prompt hash>-s<seed>.safetensors``; the method key hashes every
setting that changes the record (model, LoRA file contents, method, sampler, features, rewards), so a rerun
finds finished items by name and records made with other settings are never taken for this sweep's.

A *chunk* is up to ``sampling.batch_size`` images of consecutive items of one method: one sampler call.
Chunks are formed over the whole sweep, so a batch never depends on the world size or on what a killed run
finished. The chunks with a missing record are dealt to ranks greedily by estimated cost (AIG runs two
models), in a fixed order: every rank computes the same split. Noise of image i of prompt j with seed s
comes from a generator seeded by hash_seed(s, j, i): the same for every method, batch and rank.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import AIGInputError
from ..core.evalset import EvalRecord, EvalSet, check_set_name, read_prompt_list, tsv_prompt_rows
from ..core.files import read_text
from ..core.schedules import FAMILIES, WINDOW, Schedule, schedule_from_values
from .config import ConfigError
from .evaluate_config import EvalConfig

RECORD_PREFIX = "run-sweep-"
RECORD_SUFFIX = ".safetensors"
TUNED_ADAPTER = "tuned"


@dataclass(frozen=True)
class Method:
    """One evaluated setting: sampler mode, LoRA adapter (None for base), LoRA scale and AIG schedule."""

    label: str
    mode: str  # training.sampling mode: base | tuned | aig
    adapter: str | None = None  # peft adapter name of the LoRA it needs
    lora_path: str = ""
    lora_scale: float | None = None
    schedule: Schedule | None = None

    @property
    def cost(self) -> int:
        """UNet branches per step (AIG mixes two models)."""
        return 2 if self.mode == "aig" else 1

    def spec(self) -> dict:
        """Plain description (record key and report metadata)."""
        return {"label": self.label, "mode": self.mode, "lora": self.lora_path, "lora_scale": self.lora_scale,
                "schedule": self.schedule.describe() if self.schedule else None}


@dataclass(frozen=True)
class Prompt:
    """A prompt and its index in the prompt file (the index seeds its noise; stable under category filters)."""

    index: int
    text: str
    category: str = ""


@dataclass(frozen=True)
class Item:
    """(method, prompt, seed): one record of images_per_prompt images."""

    method: Method
    prompt: Prompt
    seed: int
    record_name: str


@dataclass
class Plan:
    """Everything a sweep will do, resolved and checked before any model is loaded."""

    config: EvalConfig
    methods: list[Method]
    prompts: list[Prompt]
    items: list[Item]
    chunks: list[list[Item]]
    method_keys: dict[str, str] = field(default_factory=dict)  # label -> method key

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.methods]


def _number(value: float) -> str:
    return f"{float(value):g}"


def aig_label(schedule: Schedule) -> str:
    """'aig:p=2' for the paper's power family, else 'aig:<family>,<param>=<v>...'; a window adds ',window=a-b'."""
    params = ",".join(f"{k}={_number(v)}" for k, v in schedule.params.items())
    if schedule.name == "power":
        text = f"aig:{params}"
    else:
        text = f"aig:{schedule.name}" + (f",{params}" if params else "")
    if (schedule.start, schedule.end) != (0.0, 1.0):
        text += f",window={_number(schedule.start)}-{_number(schedule.end)}"
    return text


def aig_schedule(entry: dict, where: str) -> Schedule:
    """Schedule of one methods.aig table (schedule_from_values); another family's parameter is an error."""
    name = entry.get("schedule", "power")
    if name not in FAMILIES:
        raise ConfigError(f"{where}: unknown schedule {name!r}; valid: {', '.join(FAMILIES)}")
    allowed = {"schedule", "label", *FAMILIES[name].parameter_names, *(p.name for p in WINDOW)}
    foreign = sorted(set(entry) - allowed)
    if foreign:
        raise ConfigError(f"{where}: {foreign} are not parameters of schedule '{name}'; it takes "
                          f"{', '.join(sorted(allowed - {'schedule', 'label'}))}")
    try:
        return schedule_from_values({k: v for k, v in entry.items() if k != "label"})
    except AIGInputError as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_file(path: str, key: str, what: str) -> str:
    if not path:
        raise ConfigError(f"{key} is empty; set it to {what}, e.g. --set {key}=/path/to/file")
    if not Path(path).exists():
        raise ConfigError(f"{key} = {path!r} does not exist; set it to {what}")
    return path


def build_methods(config: EvalConfig) -> list[Method]:
    """The configured methods in order: base, tuned, LoRA scales, AIG schedules, KL LoRAs; labels distinct."""
    m, tuned = config.methods, config.lora.tuned
    methods = [Method("base", "base")] if m.base else []
    needs_tuned = m.tuned or m.lora_scales or m.aig
    if needs_tuned:
        _check_file(tuned, "lora.tuned", "the tuned kohya LoRA (.safetensors), or drop the tuned/lora_scales/aig "
                    "methods")
    if m.tuned:
        methods.append(Method("lora:1", "tuned", TUNED_ADAPTER, tuned))
    for scale in m.lora_scales:
        methods.append(Method(f"lora:{_number(scale)}", "tuned", TUNED_ADAPTER, tuned, lora_scale=float(scale)))
    for i, entry in enumerate(m.aig):
        schedule = aig_schedule(entry, f"methods.aig[{i}]")
        methods.append(Method(entry.get("label") or aig_label(schedule), "aig", TUNED_ADAPTER, tuned,
                              schedule=schedule))
    if m.kl:
        for i, entry in enumerate(config.lora.kl):
            path = _check_file(entry["path"], f"lora.kl[{i}].path", "a KL-trained kohya LoRA")
            methods.append(Method(f"kl:{entry['name']}", "tuned", f"kl{i}", path))
    labels = [x.label for x in methods]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ConfigError(f"methods give the label(s) {repeated} twice (the tuned LoRA is 'lora:1'); drop one or "
                          "set a distinct 'label' in the methods.aig table")
    if not methods:
        raise ConfigError("no methods to evaluate; enable methods.base / methods.tuned or list lora_scales / aig")
    return methods


def read_prompts(config: EvalConfig) -> list[Prompt]:
    """The prompt file (core/evalset.read_prompt_list) with the category filter and limit applied."""
    p = config.prompts
    path = Path(_check_file(p.file, "prompts.file", "a PartiPrompts .tsv or a .txt with one prompt per line"))
    try:
        texts = read_prompt_list(path)
    except AIGInputError as error:
        raise ConfigError(f"prompts.file = {str(path)!r}: {error}") from None
    is_tsv = path.suffix.lower() == ".tsv"
    categories = [row.get("category", "") for row in tsv_prompt_rows(read_text(path))] if is_tsv else [""] * len(texts)
    prompts = [Prompt(i, t, c) for i, (t, c) in enumerate(zip(texts, categories))]
    if p.categories:
        if not is_tsv or not any(categories):
            raise ConfigError(f"prompts.categories needs a .tsv prompt file with a 'Category' column; {path.name} "
                              "has none: set prompts.categories = []")
        prompts = [x for x in prompts if x.category in p.categories]
        if not prompts:
            raise ConfigError(f"no prompt of {path.name} has a category in {p.categories}; its categories are "
                              f"{sorted(set(categories))}")
    return prompts[: p.limit] if p.limit else prompts


def _file_digest(path: str) -> str:
    """sha256 of a file's bytes (LoRA files: a retrained LoRA at the same path gets new record names)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def method_key(method: Method, config: EvalConfig, lora_digests: dict[str, str]) -> str:
    """12 hex digits naming every setting that changes this method's records."""
    m, s, f = config.model, config.sampling, config.metrics
    settings = {
        "method": method.spec(), "lora_sha256": lora_digests.get(method.lora_path, ""),
        "model": [str(Path(m.path).resolve()), m.kind, m.config_dir, m.resolution, m.prediction_type, m.weight_dtype],
        "sampler": [s.steps, s.guidance_scale, s.negative_prompt, config.prompts.images_per_prompt],
        "features": [f.features, str(Path(f.features_path).resolve()) if f.features_path else "", f.features_kind,
                     f.pixel_size],
        "reward": f.reward,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def record_name(key: str, prompt: Prompt, seed: int) -> str:
    """run-sweep-<method key>-p<index>-<prompt hash>-s<seed>.safetensors (core/evalset's RECORD_GLOB)."""
    text_hash = hashlib.sha256(prompt.text.encode()).hexdigest()[:8]
    return f"{RECORD_PREFIX}{key}-p{prompt.index:06d}-{text_hash}-s{seed}{RECORD_SUFFIX}"


def make_chunks(items: list[Item], images_per_item: int, batch_size: int) -> list[list[Item]]:
    """Consecutive items of one method, at most batch_size images (at least one item) per chunk."""
    per_chunk = max(1, batch_size // images_per_item)
    chunks, run = [], []
    for item in items:
        if run and (run[0].method != item.method or len(run) == per_chunk):
            chunks.append(run)
            run = []
        run.append(item)
    return chunks + ([run] if run else [])


def interleave(chunks: list[list[Item]], methods: list[Method]) -> list[list[Item]]:
    """Chunks ordered (position within its method, method order): every method advances together."""
    position: dict[str, int] = {}
    keyed = []
    for chunk in chunks:
        label = chunk[0].method.label
        keyed.append((position.get(label, 0), [x.label for x in methods].index(label), chunk))
        position[label] = position.get(label, 0) + 1
    return [chunk for _, _, chunk in sorted(keyed, key=lambda t: (t[0], t[1]))]


def build_plan(config: EvalConfig) -> Plan:
    """Methods, prompts, items and chunks of a sweep; every file and value is checked here (ConfigError)."""
    _check_file(config.model.path, "model.path", "a single-file checkpoint (.safetensors) or a diffusers folder")
    f = config.metrics
    if f.features != "pixels":
        _check_file(f.features_path, "metrics.features_path", f"the local model for metrics.features = '{f.features}'")
    for i, term in enumerate(f.reward):
        if not term["source"].startswith("builtin:"):
            _check_file(term["source"], f"metrics.reward[{i}].source", "a local reward model (file or folder)")
    try:
        check_set_name(config.output.set)
    except AIGInputError as error:
        raise ConfigError(f"output.set: {error}") from None
    methods = build_methods(config)
    prompts = read_prompts(config)
    digests = {m.lora_path: _file_digest(m.lora_path) for m in methods if m.lora_path}
    keys = {m.label: method_key(m, config, digests) for m in methods}
    items = [Item(m, p, s, record_name(keys[m.label], p, s))
             for m in methods for p in prompts for s in config.prompts.seeds]
    chunks = interleave(make_chunks(items, config.prompts.images_per_prompt, config.sampling.batch_size), methods)
    return Plan(config, methods, prompts, items, chunks, keys)


def pending_chunks(plan: Plan, done: set[str]) -> list[list[Item]]:
    """Chunks with at least one item whose record is not yet stored (in plan order)."""
    return [chunk for chunk in plan.chunks if any(item.record_name not in done for item in chunk)]


def assign(chunks: list[list[Item]], rank: int, world_size: int) -> list[list[Item]]:
    """This rank's chunks: each chunk, in order, goes to the rank with the least estimated cost so far."""
    load = [0] * world_size
    mine = []
    for chunk in chunks:
        target = min(range(world_size), key=lambda r: (load[r], r))
        load[target] += sum(item.method.cost for item in chunk)
        if target == rank:
            mine.append(chunk)
    return mine


@dataclass
class StoreState:
    """What a sweep finds in its evaluation set before sampling: finished records, one feature source, an error."""

    done: set[str]
    feature_source: str | None  # of the set's first record; None for an empty set
    error: str = ""
    extra: int = 0  # records of this sweep's methods and settings for items it no longer has (other prompts/seeds)


def key_of(name: str) -> str | None:
    """The method key in a sweep record's name; None for other records (e.g. AIGEvalCollect's run-<time>-...)."""
    return name[len(RECORD_PREFIX):len(RECORD_PREFIX) + 12] if name.startswith(RECORD_PREFIX) else None


def _conflicts(plan: Plan, store: EvalSet, names: set[str]) -> str:
    """An error when the set holds this sweep's labels made with other settings (other method keys)."""
    keys, labels = set(plan.method_keys.values()), set(plan.labels)
    for name in sorted(names):
        if key_of(name) is not None and key_of(name) not in keys:
            label = EvalRecord.from_file(store.path / name).label
            if label in labels:
                return (f"evaluation set {store.path} holds records of label {label!r} made with other settings "
                        f"(e.g. {name}: another model, LoRA file, sampler, feature or reward setting); the report "
                        "would mix them. Use a new output.set, or move the old run-sweep-* records away.")
    return ""


def scan_store(plan: Plan, store: EvalSet) -> StoreState:
    """Finished records, the set's feature source, and an error for stale records or a missing reference."""
    paths = store.record_paths()
    names, ours = {p.name for p in paths}, names_of(plan)
    source = EvalRecord.from_file(paths[0]).feature_source if paths else None
    error = _conflicts(plan, store, names)
    reference = plan.config.metrics.reference
    if not error and reference not in plan.labels:
        if not any(EvalRecord.from_file(p).label == reference for p in paths if p.name not in ours):
            error = (f"metrics.reference = {reference!r} is neither a label of this sweep ({plan.labels}) nor in "
                     f"set {store.path}; use 'base' (methods.base = true) or a label collected there")
    keys = set(plan.method_keys.values())
    extra = sum(key_of(name) in keys for name in names - ours)
    return StoreState(names & ours, source, error, extra)


def names_of(plan: Plan) -> set[str]:
    """Record names of every item of the plan."""
    return {item.record_name for item in plan.items}
