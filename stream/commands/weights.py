"""``menet weights``: check, convert and fetch backbone weight files.

    menet weights check FILE --backbone NAME
    menet weights convert FILE --out OUT [--backbone NAME] [--force]
    menet weights fetch NAME [--out DIR] [--url URL] [--sha256 HEX] [--trust-unverified]

``check`` loads FILE strictly into the backbone (exit 0) and prints the layout it
recognised (torchvision / IG65M, DataParallel, TSP single or two heads); otherwise it
lists every missing / unexpected key and shape difference (exit 1). ``convert`` writes
the backbone as a plain tensors-only state dict (torchvision naming), also from a file
that pickles classes a normal read refuses. ``fetch`` downloads a published release (see
``RELEASES``) with urllib, checks its sha256 and renames it into place atomically. See
docs/training.md, "Backbone weights".
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROG = "menet weights"


@dataclass(frozen=True)
class Release:
    """A published backbone weight file."""

    url: str
    backbone: str
    file_name: str
    sha256: str | None         # full digest, only when a published one is known
    sha256_prefix: str | None  # leading hex digits of the sha256 carried by the file name
    about: str


_TSP = "https://github.com/HumamAlwassel/TSP/releases/download/model_weights/"


def _tsp(file_name: str, backbone: str, about: str) -> Release:
    # TSP's own extract_features.py downloads these with torch.hub's check_hash=True, which
    # requires the hex after the last '-' of the file name to be the start of the file's
    # sha256: that prefix is checked. No full sha256 is published for these files (none was
    # found in TSP's code or README), so none is written here: fetch asks for --sha256 HEX
    # or --trust-unverified rather than trusting an invented value.
    prefix = re.fullmatch(r".*-([0-9a-f]{8})\.pth", file_name)
    return Release(_TSP + file_name, backbone, file_name, None, prefix.group(1) if prefix else None, about)


RELEASES: dict[str, Release] = {
    "r2plus1d_34-tac_on_kinetics": _tsp(
        "r2plus1d_34-tac_on_kinetics-0547130e.pth", "r2plus1d_34",
        "R(2+1)D-34 trained on Kinetics-400 action labels (TAC): the paper's backbone"),
    "r2plus1d_34-tsp_on_activitynet": _tsp(
        "r2plus1d_34-tsp_on_activitynet-max_gvf-backbone_lr_0.0001-fc_lr_0.002-epoch_5-0d2cf854.pth",
        "r2plus1d_34", "R(2+1)D-34 fine-tuned with TSP on ActivityNet-1.3 (two heads)"),
    "r2plus1d_34-tsp_on_thumos14": _tsp(
        "r2plus1d_34-tsp_on_thumos14-max_gvf-backbone_lr_0.0001-fc_lr_0.004-epoch_4-e6a30b2f.pth",
        "r2plus1d_34", "R(2+1)D-34 fine-tuned with TSP on THUMOS-14 (two heads)"),
    "r2plus1d_34-tac_on_activitynet": _tsp(
        "r2plus1d_34-tac_on_activitynet-backbone_lr_0.0001-fc_lr_0.002-epoch_5-98ccac94.pth",
        "r2plus1d_34", "R(2+1)D-34 fine-tuned on ActivityNet-1.3 action labels (TAC)"),
    "r2plus1d_34-tac_on_thumos14": _tsp(
        "r2plus1d_34-tac_on_thumos14-backbone_lr_0.00001-fc_lr_0.002-epoch_3-54b5c8aa.pth",
        "r2plus1d_34", "R(2+1)D-34 fine-tuned on THUMOS-14 action labels (TAC)"),
    # TSP publishes no r2plus1d_18 THUMOS-14 file; these are its r2plus1d_18 releases.
    "r2plus1d_18-tsp_on_activitynet": _tsp(
        "r2plus1d_18-tsp_on_activitynet-max_gvf-backbone_lr_0.0001-fc_lr_0.002-epoch_6-22835b73.pth",
        "r2plus1d_18", "R(2+1)D-18 fine-tuned with TSP on ActivityNet-1.3 (two heads)"),
    "r2plus1d_18-tac_on_activitynet": _tsp(
        "r2plus1d_18-tac_on_activitynet-backbone_lr_0.0001-fc_lr_0.004-epoch_5-9f56941a.pth",
        "r2plus1d_18", "R(2+1)D-18 fine-tuned on ActivityNet-1.3 action labels (TAC)"),
    "r2plus1d_18-tac_on_kinetics": _tsp(
        "r2plus1d_18-tac_on_kinetics-76ce975c.pth", "r2plus1d_18",
        "R(2+1)D-18 trained on Kinetics-400 action labels (TAC)"),
}


class FetchError(RuntimeError):
    """A download failed or its content could not be verified; nothing was written."""


def _release_list() -> str:
    return "\n".join(f"  {name:32s} {r.backbone:12s} {r.about}" for name, r in RELEASES.items())


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "weights", help="check, convert or fetch backbone weight files (torchvision, IG65M, TSP)",
        description="Check, convert or fetch backbone weight files. Layouts read: torchvision / IG65M "
                    "state dicts, DataParallel ('module.'), TSP checkpoints ('model' + 'features.', "
                    "heads fc or fc1/fc2).")
    actions = p.add_subparsers(dest="weights_action", metavar="ACTION", required=True)

    check = actions.add_parser("check", help="does FILE load into a backbone? (exit 0 if it does)",
                               description="Load FILE strictly into the backbone; print the layout found, "
                                           "or every missing / unexpected key and shape difference.")
    check.add_argument("file", metavar="FILE", help="weight file (.pth / .pt)")
    check.add_argument("--backbone", required=True, metavar="NAME", help="r2plus1d_34 (the paper's), r2plus1d_18 or tiny")

    convert = actions.add_parser("convert", help="rewrite FILE as a plain tensors-only state dict",
                                 description="Write the backbone tensors of FILE (any recognised layout, "
                                             "heads dropped) as a plain state dict with torchvision names, "
                                             "readable with torch.load(weights_only=True). Classes a normal "
                                             "read refuses are read as inert stand-ins: never imported or run.")
    convert.add_argument("file", metavar="FILE", help="weight file to convert")
    convert.add_argument("--out", required=True, help="file to write")
    convert.add_argument("--backbone", metavar="NAME", help="also check that the result loads into this backbone")
    convert.add_argument("--force", action="store_true", help="overwrite OUT if it exists")

    fetch = actions.add_parser(
        "fetch", help="download a published backbone weight file and verify its sha256",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download a published release, verify its sha256, rename it into place, then check "
                    "it loads into its backbone.",
        epilog="releases:\n" + _release_list() + "\n\nNo full sha256 is published for these files: the first "
               "8 hex digits carried by the file name are checked; give the full digest with --sha256 HEX "
               "or accept the download with --trust-unverified.")
    fetch.add_argument("name", metavar="NAME", help="a release name above (or any label with --url)")
    fetch.add_argument("--out", default="weights", help="directory to write into (default: weights)")
    fetch.add_argument("--url", help="download from this URL instead (a mirror; the release's checks still apply)")
    fetch.add_argument("--sha256", metavar="HEX", help="expected sha256 of the file (64 hex digits)")
    fetch.add_argument("--trust-unverified", action="store_true",
                       help="keep the file although no full sha256 was given to verify it")
    fetch.add_argument("--backbone", metavar="NAME", help="backbone to check the file against (default: the release's)")
    fetch.add_argument("--no-check", action="store_true", help="do not load the file after download")
    fetch.add_argument("--force", action="store_true", help="download again if the file exists")
    fetch.add_argument("--timeout", type=float, metavar="SECONDS", default=60.0, help="network timeout in seconds (default 60)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    action = {"check": _check, "convert": _convert, "fetch": _fetch}[args.weights_action]
    return action(args)


def _fail(action: str, message: str, code: int = 1) -> int:
    print(f"{PROG} {action}: {message}", file=sys.stderr)
    return code


def _report(weights: Any) -> list[str]:
    layout = weights.layout
    values = sum(t.numel() for t in weights.state.values())
    lines = [f"  layout: {layout.name} -- {layout.describe()}",
             f"  backbone: {len(weights.state)} tensors, {values:,} values"]
    dropped = []
    if layout.heads:
        dropped.append(f"head{'s' if len(layout.heads) > 1 else ''} {', '.join(layout.heads)} "
                       f"({layout.head_tensors} tensors)")
    if layout.ignored:
        dropped.append(f"other entries {', '.join(layout.ignored)}")
    if dropped:
        lines.append(f"  dropped: {'; '.join(dropped)}")
    if layout.stand_ins:
        lines.append(f"  read as inert stand-ins (never imported or run): {', '.join(layout.stand_ins)}")
    return lines


def _check(args: argparse.Namespace) -> int:
    from engine.model.backbone import BACKBONES
    from engine.model.weights import WeightLoadError, load_weight_file

    if args.backbone not in BACKBONES:
        return _fail("check", f"unknown backbone {args.backbone!r}; choose one of {sorted(BACKBONES)}", 2)
    try:
        _, weights = load_weight_file(args.file, args.backbone)
    except (WeightLoadError, FileNotFoundError) as exc:
        return _fail("check", str(exc))
    print("\n".join([f"{args.file}: OK, loads into {args.backbone}", *_report(weights)]))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from engine.model.backbone import BACKBONES
    from engine.model.weights import (WeightLoadError, load_into_backbone, matching_backbones, read_weight_file,
                                      save_state_dict)

    if args.backbone is not None and args.backbone not in BACKBONES:
        return _fail("convert", f"unknown backbone {args.backbone!r}; choose one of {sorted(BACKBONES)}", 2)
    out = Path(args.out)
    if out.exists() and not args.force:
        return _fail("convert", f"{out} exists (--force to overwrite)", 2)
    try:
        weights = read_weight_file(args.file, inert_stand_ins=True)
        if args.backbone is not None:
            load_into_backbone(weights.state, args.backbone, str(args.file), weights.layout)
    except (WeightLoadError, FileNotFoundError) as exc:
        return _fail("convert", str(exc))
    holds = [args.backbone] if args.backbone else matching_backbones(weights.state)
    save_state_dict(weights.state, out)
    lines = [f"wrote {out}: plain tensors-only state dict, torchvision names, from {args.file}",
             *_report(weights),
             f"  holds: {' / '.join(holds)} backbone" if holds else
             "  holds: none of the known backbones (r2plus1d_34, r2plus1d_18, tiny) exactly; "
             "`menet weights check` lists the differences"]
    print("\n".join(lines))
    return 0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_digest(got: str, url: str, expected: str | None, prefix: str | None, trust_unverified: bool) -> str:
    """Accept ``got`` or raise :class:`FetchError`; returns how it was verified."""
    if prefix is not None and not got.startswith(prefix):
        raise FetchError(f"sha256 mismatch for {url}: the release's file name says it starts with {prefix}, "
                         f"got {got}")
    if expected is not None:
        if got != expected:
            raise FetchError(f"sha256 mismatch for {url}: expected {expected}, got {got}")
        return "sha256 verified"
    if trust_unverified:
        return (f"NOT verified against a full sha256 (--trust-unverified)"
                + (f"; starts with {prefix} as its file name says" if prefix else ""))
    raise FetchError(
        f"{url}: no full sha256 is known for this file"
        + (f" (its first 8 hex digits, {prefix}, match the file name)" if prefix else "")
        + f"; its sha256 is {got}. Nothing was kept. Compare that digest with one from a source you "
          f"trust and rerun with --sha256 HEX, or accept it with --trust-unverified.")


def download(url: str, dest: Path, *, expected: str | None, prefix: str | None, trust_unverified: bool,
             timeout: float = 60.0) -> tuple[str, int, str]:
    """Stream ``url`` to a temp file beside ``dest``, verify its sha256, rename it to ``dest``.

    Returns (sha256, size, how it was verified). On any failure nothing is left behind.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(f"{url}: only http:// and https:// URLs are fetched")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "menet-stream"})
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            except urllib.error.HTTPError as exc:
                raise FetchError(f"{url}: HTTP error {exc.code} {exc.reason}") from None
            except urllib.error.URLError as exc:
                raise FetchError(f"{url}: cannot download ({exc.reason})") from None
            except OSError as exc:  # reset or timeout mid-transfer
                raise FetchError(f"{url}: download interrupted after {size} bytes ({exc})") from None
        if length is not None and length.isdigit() and size != int(length):
            raise FetchError(f"{url}: truncated download, {size} of {length} bytes")
        got = digest.hexdigest()
        how = verify_digest(got, url, expected, prefix, trust_unverified)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return got, size, how


def _fetch(args: argparse.Namespace) -> int:
    from engine.model.backbone import BACKBONES
    from engine.model.weights import WeightLoadError, load_weight_file

    release = RELEASES.get(args.name)
    if release is None and not args.url:
        return _fail("fetch", f"unknown release {args.name!r} (give --url URL for another file); "
                              f"known releases:\n{_release_list()}", 2)
    expected = None
    if args.sha256 is not None:
        expected = args.sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", expected):
            return _fail("fetch", f"--sha256 must be 64 hex digits, got {args.sha256!r}", 2)
    elif release is not None:
        expected = release.sha256
    backbone = args.backbone or (release.backbone if release else None)
    if backbone is not None and backbone not in BACKBONES:
        return _fail("fetch", f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}", 2)
    url = args.url or release.url
    file_name = release.file_name if release else Path(urllib.parse.urlsplit(url).path).name
    if not file_name:
        return _fail("fetch", f"{url}: no file name in the URL", 2)
    dest = Path(args.out) / file_name
    prefix = release.sha256_prefix if release else None

    if dest.exists() and not args.force:
        if expected is None:
            return _fail("fetch", f"{dest} exists (--force to download again, or --sha256 HEX to verify it)", 2)
        got = sha256_file(dest)
        if got != expected:
            return _fail("fetch", f"{dest} exists but its sha256 differs: expected {expected}, got {got} "
                                  "(--force to download again)")
        print(f"{dest}: already there, sha256 verified")
    else:
        print(f"downloading {url}", flush=True)
        try:
            got, size, how = download(url, dest, expected=expected, prefix=prefix,
                                      trust_unverified=args.trust_unverified, timeout=args.timeout)
        except FetchError as exc:
            return _fail("fetch", str(exc))
        print(f"wrote {dest}: {size:,} bytes, sha256 {got} ({how})")

    if backbone is None or args.no_check:
        return 0
    try:
        _, weights = load_weight_file(dest, backbone)
    except WeightLoadError as exc:
        return _fail("fetch", f"downloaded, but it does not load into {backbone}:\n{exc}")
    print("\n".join([f"{dest}: OK, loads into {backbone}", *_report(weights)]))
    return 0
