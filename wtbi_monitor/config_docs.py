"""Render the settings tree as Markdown (docs/configuration.md is generated from it).

A test compares the committed file with this output, so the reference cannot drift from
the code. Regenerate with `python -m wtbi_monitor.config_docs > docs/configuration.md`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from wtbi_monitor.config import Settings

INTRO = """# Configuration reference

Generated from `wtbi_monitor/config.py` by `python -m wtbi_monitor.config_docs`; a test
keeps this file in step with the code.

Settings come from, in increasing priority: the defaults below, a TOML file
(`configs/default.toml` unless `--config FILE` names another), environment variables, and
command-line flags. An environment variable is `WTBI_` + section + `__` + key, upper or lower
case: `WTBI_TRAINING__EPOCHS=5`, `WTBI_MODEL__PRESET=small`. Lists and tuples are given as
JSON in the environment: `WTBI_EVALUATION__FAMILIES='["cae", "iae_lstm_kl:hard"]'`.
Unknown keys in the TOML file are errors. Secrets are `SecretStr`: masked when settings are
printed or logged.
"""


def _type_name(info: FieldInfo) -> str:
    text = str(info.annotation).replace("typing.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("pathlib.", "")
    return text.replace("|", "\\|")


def _default(info: FieldInfo) -> str:
    value: Any = info.default
    if isinstance(value, tuple) and len(value) > 4:
        return f"({len(value)} items)"
    return f"`{value!r}`"


def render() -> str:
    """The whole reference as Markdown."""
    lines = [INTRO]
    top = [(k, f) for k, f in Settings.model_fields.items() if not _is_section(f)]
    if top:
        lines += ["## top level", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [
            f"| `{k}` | {_type_name(f)} | {_default(f)} | {f.description or ''} |" for k, f in top
        ]
        lines.append("")
    for name, field in Settings.model_fields.items():
        if not _is_section(field):
            continue
        section = field.annotation
        if not isinstance(section, type):  # pragma: no cover - _is_section checked it
            continue
        doc = (section.__doc__ or "").strip().splitlines()[0]
        lines += [
            f"## [{name}]",
            "",
            doc,
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for key, info in section.model_fields.items():
            meaning = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | {_type_name(info)} | {_default(info)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def _is_section(info: FieldInfo) -> bool:
    return isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)


if __name__ == "__main__":
    print(render(), end="")  # noqa: T201 - this module's job is to print the reference
