"""`zsbench protocols list|show`: every named protocol with every parameter (table or JSON)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from ..protocols import Protocol, eps_label, get_protocol, list_protocols
from ..protocols.registry import PIXEL_PARAMS
from .common import render_table

COLUMNS = (
    "name",
    "version",
    "suite",
    "threat",
    "attacks",
    "samples",
    "preprocess",
    "templates",
    "precision",
    "seed",
)


def _value(key: str, v: Any) -> str:
    if isinstance(v, float):
        return eps_label(v) if key in PIXEL_PARAMS else f"{v:g}"
    return str(v)


def _attack_text(name: str, params: dict[str, Any]) -> str:
    inner = ", ".join(f"{k}={_value(k, v)}" for k, v in params.items())
    return f"{name}({inner})"


def protocol_row(p: Protocol) -> dict[str, Any]:
    """One row: the table's columns as text plus the structured values behind them (for --json)."""
    threat = "none" if not p.eps else f"{p.norm} " + ", ".join(eps_label(e) for e in p.eps)
    samples = "full split" if p.samples is None else str(p.samples)
    if p.samples_by_dataset:
        samples += " (" + ", ".join(f"{k} {v}" for k, v in sorted(p.samples_by_dataset.items())) + ")"
    if p.samples is not None:
        samples += ", FARE's choice" if p.effective_selection() == "fare" else ", seeded"
    if p.clean_on == "split":
        samples += "; clean: whole split" + "".join(
            f" ({k}: evaluated samples)" for k, v in sorted(p.clean_on_by_dataset.items()) if v == "evaluated"
        )
    preprocess = p.effective_preprocess().text() + ("" if p.preprocess else " (default)")
    return {
        "name": p.name,
        "version": p.version,
        "suite": p.suite or "any",
        "threat": threat,
        "attacks": [_attack_text(a.name, a.params) for a in p.attacks] or ["none"],
        "samples": samples,
        "preprocess": preprocess,
        "templates": p.prompt_set,
        "precision": p.precision,
        "seed": p.seed,
        "description": p.description,
        "params": p.params(),
        "preprocess_params": p.effective_preprocess().as_dict(),
        "fingerprint": p.fingerprint(),
    }


def _pgd_brief(label: str, loss: str = "") -> Callable[[dict[str, Any]], str]:
    def brief(p: dict[str, Any]) -> str:
        step = "step follows eps" if p.get("step_size") is None else f"step {eps_label(p['step_size'])}"
        extra = ", random start" if p.get("random_start") else ""
        extra += f", {p['restarts']} restarts" if p.get("restarts", 1) > 1 else ""
        return f"{label}-{p['steps']}{loss}, {step}{extra}"

    return brief


def _apgd_brief(label: str) -> Callable[[dict[str, Any]], str]:
    def brief(p: dict[str, Any]) -> str:
        targets = f", min({p['n_target_classes']}, C-1) targets" if "n_target_classes" in p else ""
        restarts = f"{p['n_restarts']} restart" + ("s" if p["n_restarts"] != 1 else "")
        return f"{label} ({p['n_iter']} it, {restarts}{targets})"

    return brief


# Short text of each attack for the README table (the full parameters are in `protocols list`).
BRIEF: dict[str, Callable[[dict[str, Any]], str]] = {
    "pgd": _pgd_brief("PGD"),
    "pgd-cw": _pgd_brief("PGD", " on the CW margin loss"),
    "apgd-ce": _apgd_brief("APGD-CE"),
    "apgd-dlr": _apgd_brief("APGD-DLR"),
    "apgd-t": _apgd_brief("APGD-T"),
    "fab-t": _apgd_brief("FAB-T"),
    "square": lambda p: f"Square ({p['n_queries']} queries)",
}


def markdown_table(protocols: list[Protocol]) -> str:
    """The README's protocol table, generated from the registry (a test keeps the README equal to it)."""
    lines = [
        "| protocol | version | datasets | threat | attacks | samples | preprocessing | templates |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in protocols:
        row = protocol_row(p)
        attacks = " + ".join(BRIEF[a.name](a.params) for a in p.attacks) or "none"
        cells = [f"`{p.name}`", str(p.version), f"`{row['suite']}`", row["threat"], attacks]
        cells += [row["samples"], row["preprocess"], f"`{p.prompt_set}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cmd_list(args: argparse.Namespace) -> int:
    rows = [protocol_row(p) for p in list_protocols()]
    if args.markdown:
        print(markdown_table(list_protocols()), end="")
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows, COLUMNS))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    row = protocol_row(get_protocol(args.name, args.version))
    if args.json:
        print(json.dumps(row, indent=2))
        return 0
    print(render_table([row], COLUMNS))
    print(f"\n{row['description']}\nfingerprint: {row['fingerprint']}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `protocols list [--json]` and `protocols show NAME [--json]`."""
    p = subparsers.add_parser(
        "protocols",
        help="list the named, frozen evaluation protocols",
        description="Named evaluation protocols. Each is frozen: changing any parameter makes a new version, and "
        "a run that overrides one is marked custom.",
    )
    sub = p.add_subparsers(dest="protocols_command", metavar="SUBCOMMAND", required=True)
    lp = sub.add_parser(
        "list",
        help="every protocol with every parameter",
        description="Every protocol (current versions) with every parameter: threat model, attacks and "
        "their settings, samples and how they are chosen, preprocessing, templates, precision, seed.",
    )
    lp.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array of objects (one per protocol) instead of a table",
    )
    lp.add_argument("--markdown", action="store_true", help="print the README's Markdown table instead")
    lp.set_defaults(func=_cmd_list)
    sp = sub.add_parser(
        "show",
        help="one protocol in full",
        description="One protocol with every parameter, its description and fingerprint.",
    )
    sp.add_argument("name", help="protocol name, e.g. tecoa-pgd")
    sp.add_argument(
        "--version", type=int, default=None, help="an earlier (superseded) version instead of the current one"
    )
    sp.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    sp.set_defaults(func=_cmd_show)
