"""constraints-min.txt, which ``tox -e min`` installs, pins exactly pyproject.toml's floors.

A floor raised or lowered in pyproject.toml without the file (or the other way round)
would leave ``tox -e min`` testing releases the package does not claim. The tools keep
constraints.txt's pins there, so that min and the README's command differ only in the
runtime dependencies.
"""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.processes import ROOT

#: Tools whose pin follows a runtime floor rather than constraints.txt: the SDK must
#: be the API's release.
FOLLOWS_A_FLOOR = {"opentelemetry-sdk": "opentelemetry-api"}


def pins(name: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.partition("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{name}: {line} is not a pin"
            found[canonicalize_name(requirement.name)] = specifier.version
    return found


def floors() -> dict[str, str]:
    """The floor of every runtime dependency, the optional ones (not ``test``, ``dev``) too."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = list(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        if extra not in ("test", "dev"):
            runtime += requirements
    found = {}
    for line in runtime:
        requirement = Requirement(line)
        (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
        found[canonicalize_name(requirement.name)] = floor
    return found


def test_every_runtime_dependency_has_a_floor_and_min_pins_exactly_it() -> None:
    minimum = pins("constraints-min.txt")
    for name, floor in floors().items():
        assert name in minimum, f"constraints-min.txt does not pin {name} (floor {floor})"
        assert Version(minimum[name]) == Version(floor), (
            f"constraints-min.txt pins {name}=={minimum[name]}, the floor is {floor}"
        )


def test_min_keeps_the_pins_of_the_tools() -> None:
    minimum, pinned, runtime = pins("constraints-min.txt"), pins("constraints.txt"), floors()
    for name, version in pinned.items():
        if name in runtime:
            continue
        expected = minimum[FOLLOWS_A_FLOOR[name]] if name in FOLLOWS_A_FLOOR else version
        assert minimum.get(name) == expected, f"constraints-min.txt: {name} is not {expected}"
    assert set(minimum) == set(pinned) | set(runtime)
