"""The CloudFormation templates of ``infra/``: read them and put the fragments together.

The service stack is written as fragments (``infra/service/*.yaml``), one per concern. They
are read with CloudFormation's short-form intrinsics (``!Ref``, ``!Sub``, ``!GetAtt`` ...)
and one tag of our own, ``!File <path>``, which inlines a file of this repository (a
buildspec, so the template and ``build-runner/`` never disagree). ``settings.yaml`` is not
CloudFormation: its ``Settings`` map is the environment both control-plane hosts get.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import DeployError

__all__ = ["ROOT", "Fragments", "TemplateError", "load_fragments", "load_template"]

#: The source checkout: infra/, build-runner/, functions/ and site/ live here.
ROOT = Path(__file__).resolve().parents[3]
SECTIONS = ("Metadata", "Parameters", "Mappings", "Conditions", "Resources", "Outputs")


class TemplateError(DeployError):
    """A template of ``infra/`` is malformed (a bug of this repository, never user input)."""


def _loader(root: Path) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        if suffix == "File":
            path = (root / str(value)).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                raise TemplateError(f"!File {value}: no such file in the repository")
            return path.read_text()
        name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
        if name == "Fn::GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {name: value}

    Loader.add_multi_constructor("!", intrinsic)
    return Loader


def load_template(path: Path, root: Path = ROOT) -> dict[str, Any]:
    """One YAML template (or fragment) as the JSON form CloudFormation takes."""
    loaded = yaml.load(path.read_text(), Loader=_loader(root))  # a SafeLoader subclass
    if not isinstance(loaded, dict):
        raise TemplateError(f"{path.name} is not a template")
    return loaded


@dataclass(frozen=True)
class Fragments:
    """The service fragments put together: a template to merge into Chalice's, and the
    settings every host of the control plane gets."""

    template: dict[str, Any]
    settings: dict[str, Any]


def load_fragments(directory: Path, root: Path = ROOT) -> Fragments:
    """Combine ``directory/*.yaml`` into one template; a name defined twice is an error."""
    combined: dict[str, dict[str, Any]] = {}
    settings: dict[str, Any] = {}
    for path in sorted(directory.glob("*.yaml")):
        fragment = load_template(path, root)
        settings.update(fragment.pop("Settings", {}))
        for section, entries in fragment.items():
            if section not in SECTIONS or not isinstance(entries, Mapping):
                raise TemplateError(f"{path.name}: unknown section {section}")
            into = combined.setdefault(section, {})
            for name, value in entries.items():
                if name in into:
                    raise TemplateError(f"{path.name}: {section}.{name} is defined twice")
                into[name] = value
    return Fragments(template=dict(combined), settings=settings)
