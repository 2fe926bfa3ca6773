"""The ``mecca`` command line: thin wrappers over library functions.

Each command imports what it needs inside its function: most of the package loads torch
(seconds), which ``mecca --help`` and the light commands must not wait for.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mecca._version import __version__
from mecca.errors import ConfigError, InputError, MeccaError

if TYPE_CHECKING:
    from mecca.io import Volume
    from mecca.server.settings import ServerSettings
    from mecca.session.clicks_file import ClicksFile


CLI_HINTS: tuple[tuple[str, str, str], ...] = (
    (
        r"pass channel= a number from 0 to (\d+)(?: to choose one)?",
        r"pass --channel N, N from 0 to \1",
        "save the channel to use as a 3D image",
    ),
    (
        r"use box\.clip\(volume\.shape\)",
        "give an --roi inside the image: i0,j0,k0,i1,j1,k1 with 0 <= start < stop <= the "
        "image's size along each axis",
        "give an ROI inside the image",
    ),
    (
        r"click inside the ROI, or set_roi\(\) a larger box \(this resets the session\)",
        "move the click inside --roi, or give a larger --roi",
        "click inside the ROI, or give a larger ROI",
    ),
    (
        r"add a click on the object, or pass roi= / call set_roi\(\)",
        "add a click on the object to step 1 of the clicks file, or pass --roi",
        "add a click on the object",
    ),
    (r"pass roi= or call set_roi\(\) first", "pass --roi", "give an ROI first"),
    (r"pass force=True", "pass --force", "remove it first"),
    (r"that labels= does not name", "that --labels does not name", "that are not named"),
    (
        r"name every label value, or leave labels= out",
        "name every label value in --labels, or leave --labels out",
        "name every label value",
    ),
    (
        r"pass that series' folder",
        "pass that series' folder as --reference",
        "pass that series' folder",
    ),
    (
        r"give model=<pnet / unet run folder, checkpoint or bundle> or torchscript=<file>",
        "pass --model with a pnet or unet run folder, checkpoint or bundle",
        "give a pnet or unet model with --weights tta=MODEL",
    ),
    (
        r"pass a registered name \(mecca\.methods\.available\(\)\) or an InteractiveMethod",
        "pass --method with the name of a registered method",
        "use the name of a registered method",
    ),
)
"""Library hints in Python terms (``pass channel=``), what a CLI user does instead
(``--channel N``), and the words for a command without that option:
:func:`cli_message` rewrites an error's text with them."""


def cli_message(err: MeccaError, options: Sequence[str] | None = None) -> str:
    """``err``'s message with its hints in the CLI's own terms (:data:`CLI_HINTS`): the
    option a hint names when the command has it (``options``: its option names; None: any),
    else the words that need no option."""
    text = str(err)
    for pattern, replacement, fallback in CLI_HINTS:
        named = re.search(r"--[a-z-]+", replacement)
        usable = options is None or named is None or named.group() in options
        text = re.sub(pattern, replacement if usable else fallback, text)
    return text


class _Group(click.Group):
    """Turns a ``MeccaError`` into a one-line message (hints in CLI terms) and exit code 2,
    not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MeccaError as err:
            command = self.get_command(ctx, ctx.invoked_subcommand or "")
            options = [o for p in (command.params if command else []) for o in p.opts]
            click.echo(f"error: {cli_message(err, options)}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mecca")
def main() -> None:
    """MECCA: interactive 3D medical image segmentation.

    \b
    Examples:
      mecca demo
      mecca phantom --out phantoms --n 8 --seed 0
      mecca evaluate pred.nii.gz gt.nii.gz --labels 1 --json
    """


DEFAULT_METHOD = "generalist"
"""What `mecca segment` and `mecca demo` run when neither --method nor a bundle says: the
registry's DEFAULT_METHOD (written out here: importing the registry loads torch, and
`mecca --help` must stay fast; tests/test_cli.py checks that both agree)."""


def _method_of(method: str | None, model: str | None) -> str:
    """--method, else the method a --model bundle names, else :data:`DEFAULT_METHOD`.
    A --model that is no bundle (a run folder, a checkpoint, a typo) needs --method."""
    if method is not None:
        return method
    if model is not None:
        from mecca.bundle import resolve_bundle

        try:
            meta = json.loads(
                (resolve_bundle(model) / "configs" / "metadata.json").read_text("utf-8")
            )
        except (ConfigError, OSError, ValueError):
            raise ConfigError(
                f"--model {model!r} is not a model bundle, so the method to run is unknown",
                hint="give --method NAME with a run folder or checkpoint, or a bundle folder "
                "or shipped model (listed by: mecca models)",
            ) from None
        return str(meta.get("method") or DEFAULT_METHOD)
    return DEFAULT_METHOD


def _ran_line(method: str, model: str | None) -> str:
    """What a command tells the user it ran: the method, and the model of a learned one
    (``mecca models`` lists what each shipped model was trained on)."""
    from mecca.bundle import shipped_bundles

    if model is None:
        return f"method {method}"
    if model not in shipped_bundles():
        return f"method {method}, model {model}"
    return f"method {method}, model {model} (run 'mecca models {model}' for what it was trained on)"


def _parse_labels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: give label values as integers, e.g. 1,2") from None


@main.command()
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("gt", type=click.Path(path_type=Path))
@click.option(
    "--labels", help="Label values of GT that form the target, e.g. 1,2 (default: all >0)."
)
@click.option("--pred-labels", help="Label values of PRED that form the mask (default: all >0).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def evaluate(
    pred: Path, gt: Path, labels: str | None, pred_labels: str | None, as_json: bool
) -> None:
    """Score a predicted mask against a ground-truth mask (Dice, ASSD, HD95 in voxels and mm).

    \b
    Example:
      mecca evaluate pred.nii.gz labelsTr/case_001.nii.gz --labels 1,2 --json
    """
    from mecca.bench.evaluate import evaluate_files

    result = evaluate_files(
        pred, gt, labels=_parse_labels(labels), pred_labels=_parse_labels(pred_labels)
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        click.echo(f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}")


@main.command()
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Dataset folder to write."
)
@click.option("--n", "count", type=int, default=8, show_default=True, help="Number of phantoms.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--kind", type=click.Choice(["mr", "ct"]), default="mr", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing dataset folder's files.")
def phantom(out: Path, count: int, seed: int, kind: str, force: bool) -> None:
    """Write synthetic phantoms with ground truth as an MSD-layout dataset.

    \b
    Example:
      mecca phantom --out phantoms --n 8 --seed 0 --kind ct
    """
    from mecca.data.phantoms import write_phantom_dataset

    root = write_phantom_dataset(
        out, count=count, seed=seed, kind="ct" if kind == "ct" else "mr", force=force
    )
    click.echo(f"wrote {count} {kind.upper()} phantoms to {root}")


@main.command()
@click.option(
    "--data", type=click.Path(path_type=Path), help="MSD-layout folder (default: a phantom)."
)
@click.option("--case", "case_id", help="Case id in --data (default: first of the test split).")
@click.option("--target", help="Named target of --data (default: the dataset's default).")
@click.option(
    "--method",
    help="Any method of mecca benchmark (default: the method a --model bundle names, else "
    "generalist, the network for any target; growcut, geos, mecca, pnet, ...).",
)
@click.option("--model", help="Bundle folder or shipped bundle name (learned methods).")
@click.option(
    "--user",
    help="Simulated user (default: edge for methods that take only edge points, such as "
    "mecca and edge_itermrl, else error_centre).",
)
@click.option("--steps", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--overlays", type=click.Path(path_type=Path), help="Write a PNG overlay per step here."
)
def demo(
    data: Path | None,
    case_id: str | None,
    target: str | None,
    method: str | None,
    model: str | None,
    user: str | None,
    steps: int,
    seed: int,
    overlays: Path | None,
) -> None:
    """Segment one volume with a simulated user and print Dice after every step.

    The default method is the generalist (one network for any target, taking
    foreground/background points and a box; docs/defaults.md says why).
    Learned methods use the shipped model for the dataset (mecca_hippocampus for a folder
    named hippocampus), else their dataset-wide or phantom model; --model picks another
    bundle. The first line names the method and the model that ran.

    \b
    Examples:
      mecca demo
      mecca demo --data ../shared/data/hippocampus --overlays demo_png
      mecca demo --method random_walker --user error_centre
    """
    from mecca.demo import format_table, run_demo

    report = run_demo(
        data=data,
        case_id=case_id,
        target=target,
        method=_method_of(method, model),
        model=model,
        user=user,
        steps=steps,
        seed=seed,
        overlays=overlays,
    )
    click.echo(format_table(report))
    if overlays is not None:
        click.echo(f"overlays: {overlays}/step_1.png ... step_{steps}.png")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option(
    "--clicks",
    "clicks_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Clicks JSON (format: docs/segment.md).",
)
@click.option("--roi", help="ROI in voxels: i0,j0,k0,i1,j1,k1 (stop exclusive).")
@click.option(
    "--box",
    help="A box drawn tight around the object, in voxels: i0,j0,k0,i1,j1,k1 (stop "
    "exclusive). The ROI is the box plus a quarter of its size per side, and the "
    "generalist gets the box as a box prompt with the first step.",
)
@click.option(
    "--channel",
    type=click.IntRange(min=0),
    help="Channel of a 4D IMAGE to segment (0, 1, ...: e.g. one sequence of a "
    "multi-sequence MRI); needed for 4D images, where the mask is written on the 3D grid.",
)
@click.option(
    "--roi-from-clicks",
    is_flag=True,
    help="ROI = the first step's clicks + 40 mm (the default without --roi).",
)
@click.option(
    "--method",
    help="Registered method name (default: the method a --model bundle names, else "
    "generalist: any target, foreground/background clicks and a box).",
)
@click.option("--model", help="Bundle name or folder for a learned method.")
@click.option("--steps", type=int, help="Steps to run (default: one per step in the file).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Mask to write (.nii.gz, .nrrd, ...; .dcm: a DICOM SEG when IMAGE is a DICOM series).",
)
@click.option(
    "--label-name",
    default="segmentation",
    show_default=True,
    help="Segment label of a DICOM SEG --out (.dcm).",
)
@click.option("--prob", "prob_out", type=click.Path(path_type=Path), help="Probability map.")
@click.option("--advice", "advice_out", type=click.Path(path_type=Path), help="Advice JSON.")
@click.option(
    "--grow-roi",
    type=click.IntRange(0, 10),
    help="Times a step may grow the ROI by half its size on the sides the mask reaches "
    "(the clicks are replayed on the grown ROI); default: twice for an ROI derived from "
    "the clicks (a click outside it grows it too), never for a given --roi.",
)
@click.option("--force", is_flag=True, help="Replace existing outputs.")
def segment(
    image: Path,
    clicks_path: Path,
    roi: str | None,
    box: str | None,
    channel: int | None,
    roi_from_clicks: bool,
    method: str | None,
    model: str | None,
    steps: int | None,
    out: Path,
    label_name: str,
    prob_out: Path | None,
    advice_out: Path | None,
    grow_roi: int | None,
    force: bool,
) -> None:
    """Segment IMAGE from a file of clicks; the mask is written on IMAGE's own grid.
    IMAGE may be a DICOM series folder; then --out seg.dcm writes a DICOM SEG.

    \b
    Example:
      mecca phantom --out phantoms --n 1 --seed 0
      mecca segment phantoms/imagesTr/phantom_000.nii.gz \\
        --clicks examples/clicks_phantom_fg_bg.json --out mask.nii.gz
      mecca segment phantoms/imagesTr/phantom_000.nii.gz --method mecca \\
        --clicks examples/clicks_phantom.json --out mask.nii.gz --advice advice.json
      mecca segment ct_series/ --clicks clicks.json --out seg.dcm --label-name liver
    """
    from mecca import methods
    from mecca.interaction.clicks import InteractionKind
    from mecca.io import load
    from mecca.session.clicks_file import parse_roi, read_clicks
    from mecca.session.clicks_file import segment as run_segment

    if sum(x is not None for x in (roi, box)) + roi_from_clicks > 1:
        raise click.UsageError("give one of --roi, --box and --roi-from-clicks")
    given = roi if roi is not None else box
    method = _method_of(method, model)
    clicks = read_clicks(clicks_path)
    volume = load(image, channel=channel)
    _warn_if_label_map(volume, image)
    built = methods.build(method, model)
    result = run_segment(
        volume,
        clicks,
        out,
        roi=None if given is None else parse_roi(given),
        roi_as_box=box is not None,
        method=built,
        steps=steps,
        prob_out=prob_out,
        advice_out=advice_out,
        force=force,
        grow_roi=grow_roi,
        label_name=label_name,
    )
    click.echo(_ran_line(method, methods.model_for(method, model)))
    click.echo(
        f"{result.step} steps, {int(result.mask_box.sum())} voxels in the mask, "
        f"last step {1000 * result.total_seconds:.0f} ms; wrote {out}"
    )
    if roi is None or grow_roi:
        click.echo(f"ROI {result.box.start} -> {result.box.stop}")
    if result.honoured_before is not None:
        click.echo(
            f"clicks: {100 * result.honoured_before:.0f} % of {result.labelled_clicks} "
            "foreground/background clicks honoured by the method itself; the mask honours "
            + (
                "all of them"
                if not result.unhonoured
                else f"all but {len(result.unhonoured)} outside the ROI"
            )
        )
    if given is None and _one_foreground_click(clicks) and InteractionKind.BOX in built.accepts:
        # measured on unseen livers: one click marks part of the organ, a tight box most of it
        click.echo(
            "tip: one click often marks only part of a large organ; a tight box round it "
            "does better: --box i0,j0,k0,i1,j1,k1 (docs/segment.md)"
        )


def _one_foreground_click(clicks: ClicksFile) -> bool:
    """The clicks file holds one click, a foreground one (the new user's first try)."""
    from mecca.interaction.clicks import InteractionKind

    every = [c for step in clicks.steps for c in step]
    return len(every) == 1 and every[0].kind is InteractionKind.FOREGROUND


def _warn_if_label_map(volume: Volume, path: Path) -> None:
    """A warning on stderr when the image opened looks like a label map (few distinct
    whole-number values): a segmentation given where the scan was meant."""
    from mecca.io import label_map_values

    values = label_map_values(volume)
    if values is not None:
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        click.echo(
            f"warning: {path} looks like a label map, not an image ({len(values)} distinct "
            f"whole-number values: {shown}); give the scan itself (e.g. imagesTr/, not "
            "labelsTr/)",
            err=True,
        )


def parse_label_names(text: str | None) -> dict[int, str] | None:
    """``"1=liver,2=spleen"`` -> {1: "liver", 2: "spleen"}; None stays None."""
    if text is None:
        return None
    names: dict[int, str] = {}
    for item in (p.strip() for p in text.split(",")):
        value, sep, name = item.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip():
            raise click.BadParameter(
                f"{item!r} is not VALUE=NAME (e.g. 1=liver,2=spleen)", param_hint="--labels"
            )
        names[int(value)] = name.strip()
    return names


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    required=True,
    help="The DICOM series folder (or multi-frame DICOM file) the labels are on.",
)
@click.option(
    "--labels",
    "labels_text",
    help="Segment names by label value, e.g. 1=liver,2=spleen (to .dcm only; default "
    "'label <value>' for each value present).",
)
@click.option("--series-uid", help="The series to use when --reference holds several.")
@click.option("--force", is_flag=True, help="Replace an existing TARGET.")
def convert(
    source: Path,
    target: Path,
    reference: Path,
    labels_text: str | None,
    series_uid: str | None,
    force: bool,
) -> None:
    """Convert a label map to a DICOM SEG (TARGET ends in .dcm) or a DICOM SEG to a label
    map (TARGET .nii.gz, .nrrd, .mha, ...), on the grid of the --reference DICOM series.

    \b
    Examples:
      mecca convert labels.nii.gz seg.dcm --reference ct_series/ --labels 1=liver,2=spleen
      mecca convert seg.dcm labels.nii.gz --reference ct_series/
    """
    from mecca.dicom_seg import convert as convert_files
    from mecca.io import file_extension

    labels = parse_label_names(labels_text)
    to_seg = file_extension(target) == ".dcm"
    if to_seg and file_extension(source) == ".dcm":
        raise click.UsageError(
            "SOURCE and TARGET both end in .dcm: one must be a label map (.nii.gz, .nrrd, ...)"
        )
    if not to_seg and labels is not None:
        raise click.UsageError("--labels names the segments of a .dcm TARGET only")
    if not source.exists():
        raise InputError("not found", path=source, hint="check SOURCE")
    names = convert_files(
        source, target, reference, labels=labels, series_uid=series_uid, force=force
    )
    kind = "DICOM SEG" if to_seg else "label map"
    shown = ", ".join(f"{n}={name}" for n, name in sorted(names.items()))
    click.echo(f"wrote {target} ({kind}; segments {shown})")


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def models(name: str | None, as_json: bool) -> None:
    """List the shipped models: method, what each was trained on, headline figures.

    A learned model fits images like those it was trained on (anatomy, modality); for
    other images use the generalist (the default) or a classical method (geos, growcut). Run a
    model with --model NAME (mecca segment, demo, predict-npz) or --weights METHOD=NAME
    (mecca benchmark, serve). With NAME (a shipped name or a bundle folder), print that
    model's summary and its model card.

    \b
    Examples:
      mecca models
      mecca models mecca_left_atrium
    """
    from mecca.bundle import bundle_summary, resolve_bundle, shipped_summaries

    if name is not None:
        folder = resolve_bundle(name)
        summary = bundle_summary(folder)
        if as_json:
            click.echo(json.dumps(summary, indent=2))
            return
        click.echo("\n".join(_model_lines(summary)))
        card = folder / "docs" / "README.md"
        if card.is_file():
            click.echo("\n" + card.read_text(encoding="utf-8").rstrip())
        return
    summaries = shipped_summaries()
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
        return
    if not summaries:
        click.echo("no models shipped with this installation")
        return
    click.echo(f"{len(summaries)} shipped models (run one with --model NAME):")
    for summary in summaries:
        click.echo("")
        click.echo("\n".join(_model_lines(summary)))


def _model_lines(summary: dict[str, Any]) -> list[str]:
    """A bundle summary (:func:`mecca.bundle.bundle_summary`) as a few lines of text."""
    from mecca import methods

    if "error" in summary:
        return [f"{summary['name']}: DAMAGED: {summary['error']}"]
    run_as = summary["variant"] if summary["variant"] in methods.available() else None
    run_as = run_as or summary["method"]
    data = ", ".join(summary["datasets"]) or "see the model card"
    target = summary["target"] + (f" ({summary['labels']})" if summary["labels"] else "")
    lines = [
        f"{summary['name']}  (method {run_as}: --method {run_as} --model {summary['name']})",
        f"  trained on: {data}, {summary['split']} split, target {target}",
    ]
    if summary["held_out"]:
        lines.append(f"  never trained on: {', '.join(summary['held_out'])}")
    figures = [f for f in (summary["validation"], summary["test"]) if f]
    lines.append("  figures: " + ("; ".join(figures) if figures else "none in the model card"))
    return lines


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--root",
    "roots",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder whose images may be opened by relative path (repeatable).",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Autosaved sessions and exports (default ~/.mecca/server).",
)
@click.option("--token", envvar="MECCA_TOKEN", help="Require this bearer token (env MECCA_TOKEN).")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (needs --token).")
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="A Host name or address clients use to reach this server, accepted besides the "
    "bound host and loopback names (repeatable); needed with --host 0.0.0.0 or ::.",
)
@click.option(
    "--methods",
    help="Methods offered, comma-separated; the first is the default (default: the "
    "registry's served methods: generalist, mecca, itermrl, the classical ones).",
)
@click.option(
    "--weights",
    multiple=True,
    metavar="NAME=MODEL",
    help="Model for a method (run folder or bundle), e.g. partial=runs/partial_hippocampus.",
)
@click.option("--max-upload-mb", type=int, default=1024, show_default=True)
@click.option("--max-voxels", type=int, default=512**3, show_default=True)
@click.option(
    "--max-sessions", type=int, default=200, show_default=True, help="Saved sessions at most."
)
@click.option(
    "--max-loaded-sessions",
    type=int,
    default=32,
    show_default=True,
    help="Sessions in memory at most (the least recently used is unloaded to disk).",
)
@click.option(
    "--max-memory-mb",
    type=int,
    default=4096,
    show_default=True,
    help="Memory that sessions and images being opened may hold; beyond it: 503.",
)
@click.option(
    "--step-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds a step may run; a longer one is stopped (503), its session kept as saved.",
)
@click.option(
    "--threads",
    type=int,
    help="Torch threads for the methods (default: half the CPU cores, at least 2: a "
    "viewer in a browser on the same machine needs the rest).",
)
def serve(
    host: str,
    port: int,
    roots: tuple[Path, ...],
    state_dir: Path | None,
    token: str | None,
    allow_remote: bool,
    allow_hosts: tuple[str, ...],
    methods: str | None,
    weights: tuple[str, ...],
    max_upload_mb: int,
    max_voxels: int,
    max_sessions: int,
    max_loaded_sessions: int,
    max_memory_mb: int,
    step_timeout: float,
    threads: int | None,
) -> None:
    """Serve the HTTP API and the MONAI Label subset that 3D Slicer uses.

    \b
    Example:
      mecca serve --root ../shared/data --port 8000
      (3D Slicer: MONAILabel module, server http://127.0.0.1:8000)
      mecca serve --host 0.0.0.0 --allow-remote --allow-host 192.168.1.20
      (MECCA_TOKEN set to a random token, e.g. from: openssl rand -hex 24)
    """
    import uvicorn

    from mecca.server.app import create_app
    from mecca.server.settings import ServerSettings, use_server_threads

    use_server_threads(threads)
    defaults = ServerSettings()
    settings = ServerSettings(
        host=host,
        port=port,
        token=token,
        allow_remote=allow_remote,
        extra_hosts=allow_hosts,
        roots=tuple(r.resolve() for r in roots),
        methods=defaults.methods if methods is None else _names(methods),
        weights=name_value_pairs(weights, "--weights"),
        max_upload_bytes=max_upload_mb << 20,
        max_voxels=max_voxels,
        max_sessions=max_sessions,
        max_loaded_sessions=max_loaded_sessions,
        max_memory_bytes=max_memory_mb << 20,
        step_timeout_s=step_timeout,
        state_dir=defaults.state_dir if state_dir is None else state_dir,
    )
    for name in ("mecca.io", "mecca.session"):  # they log file paths: keep them quiet
        logging.getLogger(name).setLevel(logging.WARNING)
    click.echo(f"MECCA server: open {page_url(settings)}  (API schema at /openapi.json)")
    click.echo("methods: " + "; ".join(_served_models(settings)))
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_level="info")


def _served_models(settings: ServerSettings) -> list[str]:
    """Each served method, with the model a learned one runs (``--weights``, else its
    shipped default), for the start message."""
    from mecca.methods import model_for

    weights = dict(settings.weights)
    out = []
    for name in settings.methods:
        model = model_for(name, weights.get(name))
        out.append(name if model is None else f"{name} (model {model})")
    return out


def page_url(settings: ServerSettings) -> str:
    """The page's address for the start message: the first ``--allow-host`` when bound to
    every interface; with a token, in the fragment (``#token=``), which browsers never
    send to a server, and which the page moves to the tab's storage at once."""
    import urllib.parse

    from mecca.server.settings import WILDCARD_HOSTS

    host = settings.host
    if host in WILDCARD_HOSTS and settings.extra_hosts:
        host = settings.extra_hosts[0]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    url = f"http://{host}:{settings.port}/"
    if not settings.token:
        return url
    return f"{url}#token={urllib.parse.quote(settings.token, safe='')}"


def name_value_pairs(items: tuple[str, ...], option: str) -> tuple[tuple[str, str], ...]:
    """``NAME=VALUE`` option values as pairs; anything else is a usage error."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        pairs.append((name, value))
    return tuple(pairs)


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated names as a tuple (blanks dropped)."""
    return tuple(m.strip() for m in text.split(",") if m.strip())


class _TrainableMethods(click.Choice):
    """The methods ``mecca train`` trains (:func:`mecca.methods.trainable`), read from the
    registry when the option is parsed or its help shown, not when the CLI is imported."""

    def __init__(self) -> None:
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        from mecca import methods  # the registry loads torch: only for `mecca train`

        return tuple(methods.trainable())

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        """Ignored: the choices are the registry's."""


@main.command("export-model")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder.")
@click.option(
    "--checkpoint",
    type=click.Choice(["best.pt", "last.pt"]),
    help="Which checkpoint (default: best.pt when the run has one, else last.pt).",
)
@click.option("--name", help="Bundle name (default: the folder name).")
@click.option("--description", default="", help="One paragraph for the model card.")
@click.option(
    "--force", is_flag=True, help="Replace an existing bundle (the model card is regenerated)."
)
def export_model(
    run: Path, out: Path, checkpoint: str | None, name: str | None, description: str, force: bool
) -> None:
    """Turn a training run into a model bundle (MONAI Bundle layout, SHA-256, model card).

    Works for the run of any method with an export in the registry: RL runs (mecca,
    itermrl), supervised baselines (pnet, unet, uamt, intercnn, deepigeos) and
    partial-segmentation runs (partial); the checkpoint names its method.

    \b
    Example:
      mecca export-model runs/hippo --out src/mecca/models/mecca_hippocampus
    """
    from mecca import methods
    from mecca.checkpoint import checkpoint_method, load_checkpoint

    if checkpoint is None:
        checkpoint = "best.pt" if (run / "best.pt").is_file() else "last.pt"
    if not (run / checkpoint).is_file():
        raise InputError(f"the run has no {checkpoint}", path=run)
    spec = methods.spec(checkpoint_method(load_checkpoint(run / checkpoint)))
    if spec.export is None:
        raise ConfigError(f"method {spec.name!r} has no bundle export", path=run)
    folder = spec.export(
        run, out, checkpoint=checkpoint, name=name, description=description, force=force
    )
    click.echo(f"bundle: {folder}")


@main.command()
@click.option(
    "--method",
    type=_TrainableMethods(),
    help="Method (default: the config file's, else mecca); pnet, unet, uamt (semi-"
    "supervised mean teacher), intercnn and deepigeos are the supervised baselines "
    "(mecca.methods.supervised); partial is the partial-segmentation cVAE "
    "(mecca.methods.partial).",
)
@click.option("--data", type=click.Path(path_type=Path), required=True, help="MSD-layout folder.")
@click.option("--target", help="Named target of the dataset (default: its default target).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML preset.")
@click.option(
    "--labeled-fraction",
    type=float,
    help="Share of training volumes used with labels (default 1): MECCA and UA-MT also "
    "learn from the others; the other methods leave them out.",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from last.pt.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train(
    method: str | None,
    data: Path,
    target: str | None,
    config_file: Path | None,
    labeled_fraction: float | None,
    overrides: tuple[str, ...],
    out: Path,
    resume: bool,
    device: str,
    no_progress: bool,
) -> None:
    """Train MECCA, IteR-MRL or a supervised baseline; checkpoints, log and config go to --out.

    MECCA and IteR-MRL run data-parallel under torchrun (one process per GPU, or gloo on
    the CPU); the baselines (pnet, unet, uamt, intercnn, deepigeos) train in one process.

    \b
    Examples:
      mecca train --method mecca --data ../shared/data/hippocampus --out runs/hippo
      mecca train --method itermrl --data phantoms --set episodes=50 --out runs/p --resume
      torchrun --nproc-per-node 2 -m mecca.cli train --data phantoms --out runs/ddp
      mecca train --method pnet --data phantoms --set steps=500 --out runs/pnet
      mecca train --method deepigeos --data phantoms --set initial=runs/pnet --out runs/dig
      mecca train --method uamt --labeled-fraction 0.25 --data phantoms --out runs/uamt
    """
    from mecca import methods
    from mecca.config import parse_overrides, read_settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    values = parse_overrides(overrides)
    if method is not None:
        values["method"] = method
    if labeled_fraction is not None:
        values["labeled_fraction"] = labeled_fraction
    if target is not None:
        values["target"] = target
    name = str(values.get("method") or read_settings(config_file).get("method") or "mecca")
    spec = methods.spec(name)
    if spec.train is None:
        raise ConfigError(
            f"method {name!r} is not trained with mecca train",
            hint=f"trainable: {', '.join(methods.trainable())}",
        )
    request = methods.TrainRequest(
        data=data,
        out=out,
        config_file=config_file,
        values=values,
        resume=resume,
        progress=not no_progress,
        device=device,
    )
    click.echo(f"run folder: {spec.train(request)}")
    from mecca.runtime import dist_from_env, end_rank_process

    if dist_from_env().distributed:
        end_rank_process()  # under torchrun: no interpreter teardown to abort in


@main.command()
@click.option("--data", type=click.Path(path_type=Path), required=True, help="MSD-layout folder.")
@click.option("--split", default="test", show_default=True, help="A split name, or all.")
@click.option("--target", help="Named target (default: the dataset's default).")
@click.option(
    "--methods", default="mecca,itermrl", show_default=True, help="Comma-separated method names."
)
@click.option(
    "--protocol",
    default="mecca",
    show_default=True,
    help="mecca (25 + 4 x 5 edge points), mecca_guided (the same, clicks only inside the "
    "previous step's advice regions: MECCA Table 5), cvpr25 (the CVPR 2025 challenge's box "
    "then 5 clicks, as its organisers run it), itermrl (5 fg/bg clicks per step from "
    "--initial's segmentation); itermrl_random / itermrl_none: the same start with random "
    "or no clicks (IteR-MRL Table 6).",
)
@click.option(
    "--initial",
    metavar="MODEL",
    help="Initial segmenter of the itermrl protocol: a trained pnet (or unet) run or bundle.",
)
@click.option("--steps", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-cases", type=int, help="Only the first N cases of the split.")
@click.option(
    "--weights", multiple=True, metavar="NAME=BUNDLE", help="Use another bundle for a method."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results folder.")
@click.option(
    "--jobs", type=int, default=1, show_default=True, help="Cases run in parallel processes."
)
@click.option("--force", is_flag=True, help="Replace earlier results in --out.")
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the finished cases in --out/cases (same settings) and run only the rest.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option(
    "--no-box", is_flag=True, help="cvpr25: no box step (clicks only), as for some structures."
)
@click.option(
    "--recrop",
    type=click.Choice(["carry", "restart", "replay"]),
    default="carry",
    show_default=True,
    help="cvpr25: when a click leaves the ROI, the method starts again on the grown ROI: "
    "from the mask so far if it carries its mask (carry: the generalist, intercnn; the "
    "others restart), from nothing (restart), or replaying the clicks one a step (replay).",
)
def benchmark(
    data: Path,
    split: str,
    target: str | None,
    methods: str,
    protocol: str,
    initial: str | None,
    steps: int,
    seed: int,
    max_cases: int | None,
    weights: tuple[str, ...],
    out: Path,
    jobs: int,
    force: bool,
    resume: bool,
    no_progress: bool,
    no_box: bool,
    recrop: str,
) -> None:
    """Compare methods with one simulated-user protocol: results.json, .csv, report.md, plots.

    \b
    Example:
      mecca benchmark --data ../shared/data/hippocampus --split test \\
        --methods mecca,itermrl,random_walker --protocol mecca --steps 5 --out results/hippo
      mecca benchmark --data phantoms --methods itermrl,deepigeos,intercnn \\
        --weights deepigeos=runs/dig --weights intercnn=runs/icnn \\
        --protocol itermrl --initial runs/pnet --out results/itermrl
    """
    from mecca import methods as registry
    from mecca.bench.runner import BenchSettings, run_benchmark

    pairs = name_value_pairs(weights, "--weights")
    for name in _names(methods):
        ran = registry.model_for(name, dict(pairs).get(name), Path(data).name)
        if ran is not None:
            click.echo(_ran_line(name, ran))
    settings = BenchSettings(
        data=data,
        methods=_names(methods),
        split=split,
        target=target,
        protocol=protocol,
        steps=steps,
        seed=seed,
        max_cases=max_cases,
        weights=tuple(pairs),
        jobs=jobs,
        initial=initial,
        box=not no_box,
        recrop=recrop,
    )
    run_benchmark(settings, out, force=force, progress=not no_progress, resume=resume)
    click.echo((out / "report.md").read_text(encoding="utf-8"))


@main.command()
@click.option(
    "--run",
    "runs",
    multiple=True,
    required=True,
    metavar="NAME=RUN_DIR",
    help="A training run to compare (repeat).",
)
@click.option("--upto", type=int, help="Keep validation checks up to this episode (step).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
def curves(runs: tuple[str, ...], upto: int | None, out: Path) -> None:
    """Compare training runs by their validation curves (equal-budget ablations).

    Writes curves.json, curves.md (Dice after the last step at the shared checks, and
    each run's best check) and curves.png.

    \b
    Example (MECCA Fig. 9, reward weighting at 600 episodes):
      mecca curves --run itermrl=runs/itermrl_hippocampus --run focal=runs/focal \\
        --run err=runs/err --upto 600 --out docs/results/hippocampus/rewards
    """
    from mecca.bench.curves import compare_runs

    pairs = name_value_pairs(runs, "--run")
    compare_runs({name: Path(path) for name, path in pairs}, out, upto=upto)
    click.echo((out / "curves.md").read_text(encoding="utf-8"))


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--reference", help="Method the others are compared with (default: the first).")
def compare(results: tuple[Path, ...], reference: str | None) -> None:
    """Paired final-Dice differences between the methods of a benchmark run, or of several
    runs that differ only in --seed.

    RESULTS is a benchmark folder or its results.json. Prints, per method, the mean
    per-case difference to the reference, a 95 % bootstrap interval and the Wilcoxon p.
    Given several runs of one benchmark with other user seeds, it first prints each
    method's mean Dice per seed, then pairs the cases averaged over the seeds.

    \b
    Examples:
      mecca compare docs/results/hippocampus --reference mecca
      mecca compare runs/bench_seed0 runs/bench_seed1 runs/bench_seed2 --reference mecca
    """
    from mecca.bench.stats import format_paired, format_pooled, pool_seeds

    reports = [_benchmark_report(path) for path in results]
    if len(reports) == 1:
        report = reports[0]
        click.echo("\n".join(format_paired(report, reference or next(iter(report["methods"])))))
        return
    pooled = pool_seeds(reports)
    click.echo("\n".join(format_pooled(pooled, reference or next(iter(pooled["methods"])))))


def _benchmark_report(results: Path) -> dict[str, Any]:
    """The results.json of a benchmark folder (or that file); InputError when it is not one."""
    path = results / "results.json" if results.is_dir() else results
    if not path.is_file():
        raise InputError(
            "no benchmark results here", path=path, hint="pass the --out of a mecca benchmark"
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        names = list(report["methods"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError("not a mecca benchmark results.json", path=path) from err
    if not names:
        raise InputError("these results hold no methods", path=path)
    return report


@main.command("predict-npz")
@click.argument("input_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("output_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--method", "method_name", help="Any method (default: the server's default).")
@click.option("--model", metavar="BUNDLE", help="Another bundle or run for a learned method.")
def predict_npz(
    input_dir: Path, output_dir: Path, method_name: str | None, model: str | None
) -> None:
    """The CVPR 2025 challenge's container step: segs for every case .npz of INPUT_DIR.

    Reads imgs, spacing, boxes, clicks and clicks_order (docs/cvpr25.md) and writes
    OUTPUT_DIR/<case>.npz with segs, as a team's predict.sh does in the organisers'
    CVPR25_iter_eval.py; replace its docker run with this command.

    \b
    Example:
      mecca predict-npz inputs outputs --method itermrl
    """
    from mecca import methods
    from mecca.bench import cvpr25
    from mecca.bench.challenge_npz import predict_dir
    from mecca.methods import registry

    name = method_name or registry.served()[0]
    method = methods.build(name, model)
    cvpr25.check_method(name, method)
    click.echo(_ran_line(name, methods.model_for(name, model)), err=True)
    for path in predict_dir(method, input_dir, output_dir):
        click.echo(str(path))


@main.command("export-npz")
@click.argument("data_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--split", default="test", show_default=True, help="A split name, or all.")
@click.option("--target", help="Only this named target, as label 1 (default: every label).")
def export_npz(data_dir: Path, out_dir: Path, split: str, target: str | None) -> None:
    """Write an MSD-layout split as CVPR 2025 challenge cases: OUT_DIR/imgs and OUT_DIR/gts.

    \b
    Example:
      mecca export-npz ../shared/data/hippocampus challenge --split test
    """
    from mecca.bench.challenge_npz import export_split

    ids = export_split(data_dir, out_dir, split, target)
    click.echo(f"{len(ids)} cases written to {out_dir}/imgs and {out_dir}/gts")


if __name__ == "__main__":
    main()
