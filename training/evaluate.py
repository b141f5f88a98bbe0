"""`comfy-aig evaluate`: sweep base, LoRA scaling, AIG and KL LoRAs over a prompt set into one evaluation set
and report (Jena et al. 2024, Sec. 5: reward against diversity, each measured against the base model's samples).

One process or many (``torchrun --nproc_per_node=N -m comfy_aig.training evaluate ...``; gloo on CPU, nccl on
CUDA). The work (``training/sweep.py``): items (method, prompt, seed) in chunks of one sampler call, dealt to
ranks deterministically; each item's record is written atomically by the rank that sampled it, in the
AIGEvalCollect format (core/evalset), under a name that identifies the item, so a rerun skips finished items.
After a barrier rank 0 builds the report (core/evalreport: JSON, CSV, Pareto PNG) over the whole set, records
made in ComfyUI included. Each rank logs progress with an ETA; the report metadata holds the throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass

from .evaluate_config import describe_eval_fields, eval_config_to_dict, load_eval_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --set, --print-config, --list-keys, --dry-run."""
    parser.add_argument("--config", default=None,
                        help="TOML sweep config or preset name (sweep_sd15 in comfy_aig/training/configs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (TOML syntax), e.g. --set prompts.limit=20 (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--list-keys", action="store_true", help="list every config key with its help and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config and files, print the labels and how many items are left, and exit")


def run(args: argparse.Namespace) -> int:
    """Resolve the config and run (or describe) the sweep."""
    if args.list_keys:
        print(describe_eval_fields())  # noqa: T201 - command output
        return 0
    config = load_eval_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(eval_config_to_dict(config), indent=2))  # noqa: T201
        return 0
    if args.dry_run:
        print(json.dumps(describe_plan(config), indent=2))  # noqa: T201
        return 0
    summary = evaluate(config)
    if summary["rank"] == 0:  # one summary line under torchrun
        print(json.dumps(summary))  # noqa: T201
    return 0


def describe_plan(config) -> dict:
    """Labels, counts and what is left to do, without loading any model."""
    from ..core.evalset import EvalSet
    from .sweep import build_plan, names_of, scan_store

    plan = build_plan(config)
    store = EvalSet(config.output.dir, config.output.set)
    state = scan_store(plan, store)
    return {"set": str(store.path), "labels": plan.labels, "prompts": len(plan.prompts), "items": len(plan.items),
            "images": len(plan.items) * config.prompts.images_per_prompt,
            "items_left": len(names_of(plan) - state.done), "chunks": len(plan.chunks), "problem": state.error}


def _dtype(name: str, device):
    """model.weight_dtype (auto: bf16 on CUDA, else fp32)."""
    import torch

    from ..core.files import torch_dtype

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch_dtype(name)


def _precision(dtype, device):
    """Autocast to the weight dtype when it is not fp32 (noise and DDIM updates stay fp32)."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def load_sweep_model(plan, device, dtype):
    """DiffusionModel with every LoRA of the plan attached as its own peft adapter ('tuned', 'kl<i>')."""
    from .lora_export import load_kohya_into_unet
    from .models import build_diffusion_model, load_pipeline

    m = plan.config.model
    pipe = load_pipeline(m.path, kind=m.kind, config_dir=m.config_dir or None, dtype=dtype)
    pipe.to(device)
    model = build_diffusion_model(pipe, m.resolution or None, None if m.prediction_type == "auto" else m.prediction_type)
    adapters = {method.adapter: method.lora_path for method in plan.methods if method.adapter}
    with warnings.catch_warnings():  # several adapters on one UNet is the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for adapter, path in adapters.items():
            load_kohya_into_unet(model.unet, path, adapter=adapter)
    return model


@dataclass
class Scorer:
    """Per-image features [B, D] and optional rewards [B] of images [B, 3, H, W] in 0..1, with the feature
    source named as AIGImageFeatures names it (records of both must share it)."""

    features: object  # callable images -> [B, D]
    source: str
    reward: object | None  # training.rewards.WeightedReward or None


def build_scorer(config, device) -> Scorer:
    """Feature extractor (pixels, FID Inception, reward/CLIP image tower) and reward terms from local files."""
    import torch

    from ..core.features import feature_source_name, load_fid_inception, pixel_features, reward_kind
    from .rewards import build_reward

    f = config.metrics
    reward = build_reward(f.reward, device) if f.reward else None
    if reward is None:
        log.warning("metrics.reward is empty: records get features only, the report no reward axis and no plot")
    if f.features == "pixels":
        return Scorer(lambda images: pixel_features(images, f.pixel_size), feature_source_name("pixels", f.pixel_size),
                      reward)
    if f.features == "inception":
        return Scorer(load_fid_inception(f.features_path, device), feature_source_name("inception", "pool3", 2048), reward)
    from ..core.rewards import load_reward_model

    model = load_reward_model(f.features_path, kind=None if f.features_kind == "auto" else f.features_kind,
                              device=device).eval()
    with torch.no_grad():
        dim = model.image_features(torch.zeros(1, 3, 64, 64, device=device)).shape[1]
    return Scorer(model.image_features, feature_source_name("reward", reward_kind(model), dim), reward)


def chunk_noise(chunk, images_per_item: int, latent_shape):
    """x_T [N, C, h, w] of a chunk: image i of prompt j with seed s from a generator seeded by (s, j, i)."""
    import torch

    from .trainer import hash_seed

    return torch.stack([torch.randn(latent_shape, generator=torch.Generator().manual_seed(
        hash_seed(item.seed, item.prompt.index, i))) for item in chunk for i in range(images_per_item)])


def sample_chunk(model, chunk, config, precision):
    """Images [N, 3, H, W] of a chunk's items (images_per_prompt each, in item order) with its method."""
    import torch

    from .sampling import sample

    method, n, s = chunk[0].method, config.prompts.images_per_prompt, config.sampling
    if method.adapter:
        model.unet.set_adapter(method.adapter)
    prompts = [item.prompt.text for item in chunk for _ in range(n)]
    noise = chunk_noise(chunk, n, model.latent_shape)
    out = []
    for b in range(0, len(prompts), s.batch_size):
        with precision:
            result = sample(model, prompts[b:b + s.batch_size], steps=s.steps, guidance_scale=s.guidance_scale,
                            mode=method.mode, schedule=method.schedule, noise=noise[b:b + s.batch_size],
                            lora_scale=method.lora_scale, negative_prompt=s.negative_prompt)
        out.append(result.images.float())
    return torch.cat(out)


def _write_record(path, record) -> None:
    """One item's record, atomically (core/evalset.atomic_write_bytes: temp file, fsync, rename)."""
    from ..core.evalset import atomic_write_bytes

    atomic_write_bytes(path, record.to_bytes())


def store_chunk(chunk, images, scorer: Scorer, store, done: set[str], n: int) -> int:
    """Score the chunk's images and write the record of every item not yet done; returns records written."""
    import torch

    from ..core.evalset import EvalRecord

    written = 0
    with torch.no_grad():
        for k, item in enumerate(chunk):
            if item.record_name in done:
                continue
            batch = images[k * n:(k + 1) * n]  # [n, 3, H, W]
            features = scorer.features(batch).detach().float().cpu().reshape(n, -1).numpy()  # [n, D]
            scores = None
            if scorer.reward is not None:
                scores = scorer.reward.score(batch, [item.prompt.text] * n).detach().float().cpu().numpy()  # [n]
            record = EvalRecord.for_batch(item.method.label, features, item.prompt.text, item.seed, scores=scores,
                                          feature_source=scorer.source)
            _write_record(store.path / item.record_name, record)
            done.add(item.record_name)
            written += 1
    return written


class Progress:
    """Per-rank progress log: chunks done, images, images/s and the ETA of this rank's share."""

    def __init__(self, rank: int, world: int, total_images: int):
        self.rank, self.world, self.total = rank, world, total_images
        self.images, self.start = 0, time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def update(self, images: int, chunks_done: int, chunks: int) -> None:
        self.images += images
        rate = self.images / max(self.seconds, 1e-9)
        eta = (self.total - self.images) / rate if rate > 0 else float("inf")
        log.info("evaluate rank %d/%d: chunk %d/%d, %d/%d images, %.3g images/s, ETA %s", self.rank, self.world,
                 chunks_done, chunks, self.images, self.total, rate, time.strftime("%H:%M:%S", time.gmtime(eta)))


def share_state(state, info):
    """Rank 0's scan of the set, the same on every rank (broadcast), so all ranks split the same chunks."""
    if info.world_size <= 1:
        return state
    import torch.distributed as dist

    box = [state]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_throughput(progress: Progress, info) -> dict:
    """images and seconds of every rank: images/s = all images this run / the slowest rank's time."""
    per_rank = [(progress.images, progress.seconds)]
    if info.world_size > 1:
        import torch.distributed as dist

        per_rank = [None] * info.world_size
        dist.all_gather_object(per_rank, (progress.images, progress.seconds))
    images, seconds = sum(i for i, _ in per_rank), max(s for _, s in per_rank)
    return {"world_size": info.world_size, "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 4) if images and seconds > 0 else None,
            "per_rank_images_per_s": [round(i / s, 4) if i and s > 0 else None for i, s in per_rank]}


def ordered_groups(groups: dict, labels: list[str]) -> dict:
    """The set's labels with this sweep's in config order first, then the rest (e.g. ComfyUI runs) as found."""
    return {**{x: groups[x] for x in labels if x in groups}, **groups}


def write_sweep_report(plan, store, throughput: dict) -> dict:
    """core/evalreport over the whole set (the AIGEvalReport files: report_<reference>.json/.csv/.png)."""
    from ..core.evalreport import evaluate_labels, report_stem, write_report

    f = plan.config.metrics
    rows = evaluate_labels(ordered_groups(store.by_label(), plan.labels), f.reference, k=f.k)
    meta = {"set": plan.config.output.set, "reference": f.reference, "k": f.k, "x_metric": f.x_metric,
            "title": f"{plan.config.output.set}: reward vs {f.x_metric} (reference {f.reference!r})",
            "throughput": throughput, "sweep": {"methods": [m.spec() for m in plan.methods],
                                                "config": eval_config_to_dict(plan.config)}}
    return write_report(rows, store.path, report_stem(f.reference), meta, x_metric=f.x_metric)


def _check_source(scorer: Scorer, existing: str | None, store) -> None:
    from ..core.evalset import EvalSetError

    if existing is not None and existing != scorer.source:
        raise EvalSetError(f"evaluation set {store.path} holds features from {existing!r} but this sweep makes "
                           f"{scorer.source!r}; metrics need one feature model per set: use another output.set or "
                           "the same metrics.features")


def sample_share(plan, mine, state, store, info, device) -> Progress:
    """Sample and store this rank's chunks (model and scorer are loaded only when there is work)."""
    n = plan.config.prompts.images_per_prompt
    progress = Progress(info.rank, info.world_size, sum(len(c) for c in mine) * n)
    if not mine:
        return progress
    scorer = build_scorer(plan.config, device)
    _check_source(scorer, state.feature_source, store)
    dtype = _dtype(plan.config.model.weight_dtype, device)
    model = load_sweep_model(plan, device, dtype)
    store.path.mkdir(parents=True, exist_ok=True)
    progress.start = time.perf_counter()  # throughput counts sampling, not loading
    by_method = sorted(mine, key=lambda c: plan.labels.index(c[0].method.label))  # one adapter switch per method
    for i, chunk in enumerate(by_method):
        images = sample_chunk(model, chunk, plan.config, _precision(dtype, device))
        store_chunk(chunk, images, scorer, store, state.done, n)
        progress.update(len(chunk) * n, i + 1, len(mine))
    return progress


def evaluate(config) -> dict:
    """Run the sweep (module docstring); returns the throughput and, on rank 0, the report paths."""
    from ..core.evalset import EvalSet, EvalSetError
    from .config import ConfigError
    from .distributed import barrier, init_distributed, shutdown
    from .inputs import resolve_device
    from .sweep import assign, build_plan, names_of, pending_chunks, scan_store

    plan = build_plan(config)  # every config, file and prompt error is raised here, before any model loads
    device = resolve_device(config.model.device, "model.device", ConfigError)
    info = init_distributed(device.type)
    if info.world_size > 1 and device.type == "cuda":
        import torch

        device = torch.device("cuda", info.local_rank)
    try:
        store = EvalSet(config.output.dir, config.output.set)
        state = share_state(scan_store(plan, store) if info.is_main else None, info)
        if state.error:
            raise EvalSetError(state.error)
        if state.extra and info.is_main:
            log.warning("set %s holds %d records of this sweep's methods for prompts or seeds it no longer has; "
                        "the report includes them (use a new output.set for a clean comparison)", store.path,
                        state.extra)
        mine = assign(pending_chunks(plan, state.done), info.rank, info.world_size)
        progress = sample_share(plan, mine, state, store, info, device)
        barrier(info)
        throughput = gather_throughput(progress, info)
        summary = {"set": str(store.path), "labels": plan.labels, "rank": info.rank, **throughput}
        if info.is_main:
            missing = sorted(names_of(plan) - {p.name for p in store.record_paths()})
            if missing:
                raise EvalSetError(f"{len(missing)} items have no record after the sweep (e.g. {missing[0]}); "
                                   "rerun the same command to finish them")
            log.info("evaluate: %d images this run, %s images/s over %d rank(s)", throughput["images"],
                     throughput["images_per_s"], info.world_size)
            summary["report"] = {k: str(v) for k, v in write_sweep_report(plan, store, throughput).items()}
        barrier(info)
        return summary
    finally:
        shutdown(info)
