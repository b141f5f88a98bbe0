"""Queue evaluation: AIGPromptList feeds a prompt file run by run, AIGEvalCollect stores each run's features
and rewards in an evaluation set, AIGEvalReport writes metrics per run label, a CSV and a Pareto plot."""

from __future__ import annotations

from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..core.diversity import METRIC_KEYS
from ..core.errors import AIGInputError
from ..core.evalreport import evaluate_labels, report_stem, why_not_plottable, write_report
from ..core.evalset import (
    PROMPT_LIST_SUFFIXES,
    EvalRecord,
    EvalSet,
    EvalSetError,
    check_set_name,
    prompt_at,
    read_prompt_list,
)
from .combos import ListedCombo
from .diversity import FeaturesType
from .folders import input_folder, list_files, output_folder
from .reward_loader import REWARD_MODEL
from .rewards import score_images

EVAL_SUBFOLDER = "aig_eval"  # under ComfyUI's output folder
MAX_SEED = 0xFFFFFFFFFFFFFFFF
PLOT_METRICS = tuple(m for m in METRIC_KEYS if m != "vendi_ref")


def eval_root() -> Path:
    """<ComfyUI output>/aig_eval: every evaluation set is a folder in it."""
    return Path(folder_paths.get_output_directory()) / EVAL_SUBFOLDER


def eval_set(set_name: str) -> EvalSet:
    """The evaluation set of that name, whose folder must resolve inside output/aig_eval."""
    check_set_name(set_name)
    output_folder(EVAL_SUBFOLDER).child(set_name, "evaluation set")
    return EvalSet(eval_root(), set_name)


def prompt_list_files() -> list[str]:
    """Prompt lists (.txt/.tsv) under ComfyUI's input folder, as relative '/'-separated names (bounded walk)."""
    return list_files(input_folder(), PROMPT_LIST_SUFFIXES)[0]


def prompt_list_path(name: str) -> Path:
    """Real path of a listed prompt file inside the input folder; UnsafeNameError for anything else."""
    if not str(name).lower().endswith(PROMPT_LIST_SUFFIXES):
        raise EvalSetError(f"prompt list {name!r} is not a .txt or .tsv file; pick one from the list.")
    return input_folder().locate(name, "prompt list", kind="file")


class AIGPromptList(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGPromptList",
            display_name="AIG Prompt List",
            category="AIG/evaluation",
            description="One prompt per queued run from a text file in ComfyUI's input folder (.txt: one prompt per "
            "line; .tsv: the 'Prompt' column, e.g. PartiPrompts). Set index to 'increment' and use Queue (N).",
            inputs=[
                ListedCombo("prompt_file", options=prompt_list_files(),
                               tooltip="Prompt list in ComfyUI/input (.txt or .tsv); no neutral value."),
                io.Int.Input("index", default=0, min=0, max=10_000_000, control_after_generate=True,
                             tooltip="Run index: picks line index mod count (0 = first prompt). Set the control to "
                             "'increment' so each queued run takes the next prompt."),
            ],
            outputs=[
                io.String.Output(display_name="prompt"),
                io.Int.Output(display_name="line"),
                io.Int.Output(display_name="count"),
                io.Int.Output(display_name="pass"),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompt_file=None):
        """The file must be a listed prompt list inside the input folder (0.3.64 does not check V3 combos)."""
        if prompt_file is None:  # linked: checked when the node runs
            return True
        try:
            prompt_list_path(prompt_file)
        except AIGInputError as error:
            return str(error)
        return True

    @classmethod
    def fingerprint_inputs(cls, prompt_file=None, index=None, **_):
        """Re-run when the file changes (its mtime and size), not only when the widgets do."""
        try:
            stat = prompt_list_path(prompt_file).stat()
        except (AIGInputError, OSError, TypeError):
            return float("nan")
        return (prompt_file, index, stat.st_mtime_ns, stat.st_size)

    @classmethod
    def execute(cls, prompt_file, index) -> io.NodeOutput:
        prompts = read_prompt_list(prompt_list_path(prompt_file))
        prompt, line, wraps = prompt_at(prompts, index)
        return io.NodeOutput(prompt, line, len(prompts), wraps)


def reward_scores(reward_model, images, prompt: str):
    """Rewards [B] of IMAGE [B, H, W, C] for one prompt repeated, or None when no reward model is connected."""
    if reward_model is None and images is None:
        return None
    if reward_model is None or images is None:
        raise EvalSetError("to store rewards connect both reward_model and images to AIG Eval Collect "
                           "(or neither to store features only).")
    return score_images(reward_model, images, [prompt] * images.shape[0]).numpy()  # [B]


class AIGEvalCollect(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGEvalCollect",
            display_name="AIG Eval Collect",
            category="AIG/evaluation",
            description="Appends this run's features (and rewards) with its prompt, seed and run label to an "
            "evaluation set in output/aig_eval/<set name>. One file per run, written atomically: back-to-back "
            "queued runs are all kept, and stopping ComfyUI loses only the run in progress. Runs every time.",
            inputs=[
                FeaturesType.Input("features", tooltip="Features of this run's images (AIG Image Features)."),
                io.String.Input("set_name", default="eval",
                                tooltip="Evaluation set (folder name in output/aig_eval); one feature model per set."),
                io.String.Input("label", default="base",
                                tooltip="Run label, e.g. 'base', 'lora:0.5', 'aig:p=2'. Text before ':' groups "
                                "points into one curve in the report plot; 'base' is the usual reference."),
                io.String.Input("prompt", default="", multiline=True,
                                tooltip="Prompt of this run (connect AIG Prompt List); empty is allowed."),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=False,
                             tooltip="Seed of this run (connect the sampler's seed); pairs runs with the reference."),
                io.Image.Input("images", optional=True,
                               tooltip="The same images, to score with reward_model (neutral: unconnected)."),
                REWARD_MODEL.Input("reward_model", optional=True,
                                   tooltip="Reward model for the report's reward axis (neutral: unconnected)."),
            ],
            outputs=[io.String.Output(display_name="set_name"), io.Int.Output(display_name="runs")],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **_):
        """Never cached: every queued run is a new record, even with identical inputs."""
        return float("nan")

    @classmethod
    def validate_inputs(cls, set_name=None):
        """set_name only (ComfyUI repeats a failure once per argument); an empty label fails when the node runs."""
        try:
            if set_name is not None:
                check_set_name(set_name)
        except EvalSetError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, features, set_name, label, prompt, seed, images=None, reward_model=None) -> io.NodeOutput:
        scores = reward_scores(reward_model, images, prompt)
        store = eval_set(set_name)
        record = EvalRecord.for_batch(label.strip(), features.values.numpy(), prompt, seed, scores=scores,
                                      feature_source=features.source)
        store.append(record)
        runs = len(store.record_paths())
        text = (f"stored {record.features.shape[0]} images as {record.label!r} in set {set_name!r} "
                f"({runs} runs so far)")
        return io.NodeOutput(set_name, runs, ui=ui.PreviewText(text))


def summary_table(rows: list[dict], x_metric: str) -> str:
    """Plain-text table: label, n, reward, the plotted metric, then SCD and recall unless that is one of them."""
    def fmt(value):
        return "-" if value is None else f"{value:.4g}"

    metrics = list(dict.fromkeys([x_metric, "scd", "recall"]))
    lines = [" | ".join(["label", "n", "reward", *metrics])]
    for r in rows:
        cells = [r["label"], str(r["n"]), fmt(r["reward_mean"]), *(fmt(r[m]) for m in metrics)]
        lines.append(" | ".join(cells) + (f"  ({r['note']})" if r["note"] else ""))
    return "\n".join(lines)


class AIGEvalReport(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIGEvalReport",
            display_name="AIG Eval Report",
            category="AIG/evaluation",
            description="Metrics of every run label in an evaluation set against a reference label (SCD, log-SCD, "
            "FID, precision, recall, Vendi, mean reward), written as JSON + CSV and a reward-vs-diversity plot "
            "with the Pareto front, in output/aig_eval/<set name>.",
            inputs=[
                io.String.Input("set_name", default="eval",
                                tooltip="Evaluation set to report on; connect AIG Eval Collect's set_name to report "
                                "after each run."),
                io.String.Input("reference_label", default="base",
                                tooltip="Label of the reference runs, normally the base model with the same prompts "
                                "and seeds ('base')."),
                io.Int.Input("k", default=5, min=1, max=100,
                             tooltip="Neighbours for precision/recall (5 as in the paper)."),
                ListedCombo("x_metric", options=list(PLOT_METRICS), default="scd",
                               tooltip="Diversity metric on the plot's x axis (SCD is the paper's; lower = closer "
                               "to the reference's diversity)."),
            ],
            outputs=[io.String.Output(display_name="summary"), io.String.Output(display_name="json_path")],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, set_name=None, reference_label=None, k=None, x_metric=None, **_):
        """Re-run whenever the set gains or loses a record (a linked set_name re-runs with its collect node)."""
        try:
            records = eval_set(set_name).fingerprint()
        except (AIGInputError, TypeError):
            return float("nan")
        return (set_name, reference_label, k, x_metric, records)

    @classmethod
    def validate_inputs(cls, set_name=None, x_metric=None):
        """Named inputs only (no **kwargs) so ComfyUI still range-checks k; V3 combos are checked here."""
        try:
            if set_name is not None:
                check_set_name(set_name)
        except EvalSetError as error:
            return str(error)
        if x_metric is not None and x_metric not in PLOT_METRICS:
            return f"x_metric {x_metric!r} is not one of {list(PLOT_METRICS)}."
        return True

    @classmethod
    def execute(cls, set_name, reference_label, k, x_metric) -> io.NodeOutput:
        store = eval_set(set_name)
        if not store.record_paths():
            raise EvalSetError(f"evaluation set {set_name!r} has no runs yet in {store.path}; queue runs through "
                               "AIG Eval Collect first.")
        rows = evaluate_labels(store.by_label(), reference_label, k=k)
        stem = report_stem(reference_label)
        meta = {"set": set_name, "reference": reference_label, "k": k, "x_metric": x_metric,
                "title": f"{set_name}: reward vs {x_metric} (reference {reference_label!r})"}
        paths = write_report(rows, store.path, stem, meta, x_metric=x_metric)
        summary = summary_table(rows, x_metric)
        ui_out = {"text": (summary,)}
        if "png" in paths:
            subfolder = f"{EVAL_SUBFOLDER}/{set_name}"
            ui_out.update(ui.SavedImages([ui.SavedResult(paths["png"].name, subfolder, io.FolderType.output)])
                          .as_dict())
        else:
            summary += "\n(no plot: " + why_not_plottable(rows, x_metric, "reward_mean") + ")"
            ui_out["text"] = (summary,)
        return io.NodeOutput(summary, str(paths["json"]), ui=ui_out)


EVALUATION_NODES = [AIGPromptList, AIGEvalCollect, AIGEvalReport]
