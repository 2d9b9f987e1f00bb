"""The upgrade rules of PRODUCT.md, row by row, and `wharf upgrade --plan`."""

from __future__ import annotations

import itertools

import pytest
from click.testing import CliRunner

from wharf.cli.main import main
from wharf.upgrade.versions import Version, VersionError, plan

pytestmark = pytest.mark.once

# Each row of the table as a function of (x, y, z), with the answer it gives.
ROWS = [
    ("patch upgrade", lambda x, y, z: (f"{x}.{y}.0", f"{x}.{y}.1"), True),
    ("skip patch version", lambda x, y, z: (f"{x}.{y}.0", f"{x}.{y}.2"), True),
    ("patch downgrade", lambda x, y, z: (f"{x}.{y}.2", f"{x}.{y}.1"), False),
    ("minor upgrade", lambda x, y, z: (f"{x}.{y}.{z}", f"{x}.{y + 1}.{z + 3}"), True),
    ("minor upgrade", lambda x, y, z: (f"{x}.{y}.{z + 4}", f"{x}.{y + 1}.0"), True),
    ("skip minor version", lambda x, y, z: (f"{x}.{y}.{z}", f"{x}.{y + 2}.{z}"), False),
    ("minor downgrade", lambda x, y, z: (f"{x}.{y + 1}.{z}", f"{x}.{y}.{z + 5}"), False),
    ("skip major version", lambda x, y, z: (f"{x}.{y}.{z}", f"{x + 2}.{y}.{z}"), False),
    ("skip major version", lambda x, y, z: (f"{x}.{y}.{z}", f"{x + 2}.0.0"), False),
    ("major downgrade", lambda x, y, z: (f"{x + 1}.{y}.{z}", f"{x}.{y}.{z}"), False),
    ("major upgrade", lambda x, y, z: (f"{x}.{y}.{z}", f"{x + 1}.0.0"), True),
    (
        "major upgrade skipping minor version",
        lambda x, y, z: (f"{x}.{y}.{z}", f"{x + 1}.{y + 1}.{z}"),
        False,
    ),
]
XYZ = list(itertools.product([0, 1, 7], [0, 2, 10], [0, 3]))


@pytest.mark.parametrize(("rule", "pair", "supported"), ROWS, ids=[r[0] for r in ROWS])
def test_every_row_of_the_rules_table(rule, pair, supported):
    for x, y, z in XYZ:
        source, target = pair(x, y, z)
        answer = plan(source, target)
        assert (answer.rule, answer.supported) == (rule, supported), (source, target)
        if not supported:
            assert answer.reason and answer.instead


@pytest.mark.parametrize(
    ("source", "target", "instead"),
    [
        ("2.4.1", "2.6.0", "upgrade to 2.5.x first"),
        ("2.4.1", "4.0.0", "upgrade to 3.0.0 first"),
        ("2.4.1", "3.1.0", "upgrade to 3.0.x first"),
        ("2.6.3", "2.5.9", "stay on 2.6.3"),
    ],
)
def test_a_refusal_names_the_path_to_take(source, target, instead):
    assert instead in plan(source, target).explain()


def test_versions_compare_numerically_and_parse_strictly():
    assert Version.parse("1.10.0") > Version.parse("1.9.9")
    for bad in ["1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.2.x", "", "1.2.3-rc1", "1. 2.3"]:
        with pytest.raises(VersionError):
            Version.parse(bad)


@pytest.mark.parametrize(
    ("source", "target", "code", "text"),
    [
        ("2.5.0", "2.5.3", 0, "skip patch version: supported"),
        ("2.5.2", "2.6.0", 0, "minor upgrade: supported"),
        ("2.5.2", "3.0.0", 0, "major upgrade: supported"),
        ("2.5.2", "2.7.0", 3, "upgrade to 2.6.x first"),
        ("2.5.2", "2.5.1", 3, "downgrades are not supported"),
        ("2.5.2", "3.1.0", 3, "upgrade to 3.0.x first"),
    ],
)
def test_upgrade_plan_exit_codes(source, target, code, text):
    result = CliRunner().invoke(main, ["upgrade", "--plan", "--from", source, "--to", target])
    assert result.exit_code == code, result.output
    assert text in result.output


def test_upgrade_plan_usage_errors():
    runner = CliRunner()
    assert runner.invoke(main, ["upgrade", "--plan", "--to", "1.0.0"]).exit_code == 2
    bad = runner.invoke(main, ["upgrade", "--plan", "--from", "one", "--to", "1.0.0"])
    assert bad.exit_code == 2 and "MAJOR.MINOR.PATCH" in bad.output
    assert runner.invoke(main, ["upgrade", "--from", "1.0.0"]).exit_code == 2
