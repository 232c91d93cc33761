"""A user's mistake is one line on stderr, naming the flag or the file and the fix; never a traceback.

Checks that need no model run before a command starts (:func:`preflight`: ``--out``, ``--device``,
``--rho`` / ``--p`` / ``--tau``, ``--base-records``, ``--model``); errors raised later by the library with a message meant for users (``ValueError``,
``FileNotFoundError``, ...) are printed as they are, in one line. Ctrl-C stops with a line that says
whether running the same command again resumes. An unexpected exception still shows its traceback: it
is a bug to report, not a mistake to explain.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

# Exceptions whose message is written for the user (the library's errors name the flag or the file).
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)

# Commands that pick up where they stopped when run again (records / checkpoints are written as they go).
RESUMABLE = {"eval", "sweep", ("organism", "train")}


def fail(message: str) -> int:
    print(f"vasink: error: {one_line(message)}", file=sys.stderr)
    return 2


def one_line(message) -> str:
    return " ".join(str(message).split())


class UsageError(ValueError):
    """A flag's value that cannot work (found before anything is loaded)."""


def run(args) -> int:
    """Run a parsed command; user errors and Ctrl-C become one line and a non-zero exit code."""
    # transformers' own notes (attention implementation switches, ...) are for library developers; a user
    # who wants them sets TRANSFORMERS_VERBOSITY=info. Set before transformers is imported by the command.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        preflight(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"vasink: interrupted. {_resume_hint(args)}", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        return fail(message)
    except ImportError as error:
        if type(error).__name__ == "MissingExtra":  # vasink.eval.data: an optional extra, with its pip line
            return fail(error)
        raise
    except OSError as error:
        if type(error).__name__ == "UnidentifiedImageError":  # PIL: "cannot identify image file 'x'"
            return fail(f"{error} (an empty or corrupt image file)")
        raise


def _resume_hint(args) -> str:
    command = args.command if args.command != "organism" else (args.command, args.organism_command)
    if command not in RESUMABLE:
        return "Nothing was kept; run the command again to start over."
    if getattr(args, "fresh", False):
        return "Run the same command without --fresh to resume from the last checkpoint."
    return "What was done is kept: run the same command again to resume."


# -- checks before a command starts ----------------------------------------------------------------------

FILE_OUT_COMMANDS = {"score"}  # there --out is a JSON file; elsewhere it is a folder


def preflight(args) -> None:
    out = getattr(args, "out", None)
    if out is not None and args.command != "report":
        check_out(out, folder=args.command not in FILE_OUT_COMMANDS)
    if getattr(args, "device", None):
        check_device(args.device)
    check_var_values(args)
    if getattr(args, "question", None) is not None:
        check_text("--question", args.question)
    base_records = getattr(args, "base_records", None)
    if base_records is not None and not (Path(base_records) / "run.json").is_file():
        raise UsageError(f"--base-records {base_records}: no run.json there (not a vasink eval output folder)")
    model = getattr(args, "model", None)
    if model is not None and model != "organism":
        from ..eval.loading import check_model_spec

        check_model_spec(model)


def check_out(out: str, folder: bool = True) -> None:
    """``--out`` must be creatable: not a file when a folder is wanted (nor under a file), not a folder
    when a file is."""
    path = Path(out).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: this is a file, and --out names a folder (the outputs go inside it); "
                         f"pass a new or existing folder")
    if not folder and path.is_dir():
        raise UsageError(f"--out {out}: this is a folder, and --out names the JSON file to write")
    parent = path if folder else path.parent
    for above in [parent, *parent.parents]:
        if above.exists():
            if not above.is_dir():
                raise UsageError(f"--out {out}: {above} is a file, so no folder can be made under it")
            if not os.access(above, os.W_OK):
                raise UsageError(f"--out {out}: {above} is not writable")
            break


def check_text(flag: str, text: str) -> None:
    """Text from the command line must be valid UTF-8: Python keeps undecodable bytes as lone surrogates,
    which the tokenizer rejects with a TypeError deep inside ``transformers``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raw = text[error.start:error.end].encode("utf-8", "surrogateescape")
        raise UsageError(f"{flag}: not valid UTF-8 text (byte {raw.hex(' ')} at character {error.start + 1} of "
                         f"{text.encode('utf-8', 'surrogateescape')!r}); type it again in a UTF-8 terminal") from None


def check_var_values(args) -> None:
    """``--rho``, ``--p``, ``--tau`` (a sweep's comma-separated grids too) in VARConfig's ranges, before a model
    is loaded."""
    from ..config import VARConfig

    for name in ("rho", "p", "tau"):
        value = getattr(args, name, None)
        if value is None:
            continue
        if isinstance(value, str):
            from ..eval.sweep import parse_grid

            values = parse_grid(value, None, f"--{name}")
        else:
            values = [value]
        for number in values:
            try:
                VARConfig(**{name: number})
            except ValueError as error:
                raise UsageError(f"--{name} {number:g}: {error}") from None


def check_device(device: str) -> None:
    """``--device`` must name a device this torch can use."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device}: not a torch device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"--device {device}: {why}; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu")


# -- warnings ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_line_warnings():
    """Warnings during a command are printed as ``warning: message`` (no source line, no category)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {one_line(message)}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
