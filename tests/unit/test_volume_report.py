"""The volume tool's pure parts: report size limit, input parsing, mountinfo parsing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from aitbc_operator.models.volume_report import ChainVolumeReport, VolumeReport
from aitbc_operator.volume import commands as cli
from aitbc_operator.volume import fs
from aitbc_operator.volume.report import (
    TERMINATION_MESSAGE_LIMIT,
    render,
    summarize_actions,
    write_termination_message,
)

LONG_CHAINS = [f"c{i:02d}-" + "x" * 59 for i in range(16)]


def worst_case_report() -> VolumeReport:
    """16 chains with 63-character ids, every per-chain action, a long error naming many files."""
    actions = [f"{verb} {c}" for c in LONG_CHAINS for verb in ("mkdir", "nocow-recreate", "wal", "chown")]
    error = "; ".join(f"corrupt database /var/lib/aitbc/data/{c}/chain.db (quick check: bad page)" for c in LONG_CHAINS)
    return VolumeReport(
        fs="btrfs", nocow="set", changed=True, ok=False, error=error, actions=["stray-moved x", *actions],
        chains=[ChainVolumeReport(chain=c, nocow="unsupported", journal="wal", integrity="corrupt", size=2**40)
                for c in LONG_CHAINS],
    )


def test_a_small_report_is_rendered_in_full() -> None:
    report = VolumeReport(fs="ext4", nocow="unsupported", actions=["mkdir a", "wal a"], changed=True,
                          chains=[ChainVolumeReport(chain="a", nocow="unsupported", journal="wal", integrity="ok")])
    text = render(report)
    assert json.loads(text) == report.to_wire()
    assert ", " not in text, "compact separators"
    assert ": " not in text


def test_the_worst_case_fits_the_termination_message() -> None:
    report = worst_case_report()
    assert len(json.dumps(report.to_wire())) > TERMINATION_MESSAGE_LIMIT, "precondition: too big in full"

    text = render(report)

    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = VolumeReport.model_validate_json(text)
    assert [c.chain for c in parsed.chains] == LONG_CHAINS, "every chain's state survives"
    assert all(c.integrity == "corrupt" for c in parsed.chains)
    assert parsed.ok is False
    assert parsed.error is not None
    assert parsed.error.startswith("corrupt database /var/lib/aitbc/data/c00-")
    assert parsed.actions == ["stray-moved x1", "mkdir x16", "nocow-recreate x16", "wal x16", "chown x16"]


def test_render_refuses_an_impossible_limit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        render(worst_case_report(), limit=200)


def test_summarize_actions_counts_per_verb_in_order() -> None:
    assert summarize_actions(["wal a", "mkdir b", "wal b"]) == ["wal x2", "mkdir x1"]


def test_termination_message_default_path_is_not_created_outside_a_pod(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    default = tmp_path / "termination-log"
    monkeypatch.setattr("aitbc_operator.volume.report.DEFAULT_TERMINATION_LOG", default)
    assert write_termination_message("{}", default) is False
    assert not default.exists()
    default.touch()  # the kubelet mounts it
    assert write_termination_message("{}", default) is True
    assert default.read_text() == "{}"


def test_termination_message_unwritable_is_skipped(tmp_path: Path) -> None:
    assert write_termination_message("{}", tmp_path / "missing-dir" / "log") is False
    assert write_termination_message("{}", tmp_path / "log") is True


def namespace(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "data_dir": None, "chains": None, "uid": None, "gid": None, "nocow": None, "require_nocow": None,
        "journal_mode": None, "integrity_check": None, "busy_timeout": 2.0,
    }
    return argparse.Namespace(**(values | overrides))


def test_prepare_options_fall_back_to_the_environment() -> None:
    env = {"AITBC_DATA_DIR": "/srv/aitbc", "AITBC_CHAINS": " ait-mainnet,ait-testnet,ait-mainnet ", "AITBC_UID": "1000",
           "AITBC_GID": "1001", "AITBC_DISABLE_COW": "false", "AITBC_REQUIRE_NOCOW": "yes",
           "AITBC_INTEGRITY_CHECK": "full"}
    opts = cli.prepare_options(namespace(), env)
    assert (str(opts.data_dir), opts.chains) == ("/srv/aitbc", ("ait-mainnet", "ait-testnet"))
    assert (opts.uid, opts.gid, opts.nocow, opts.require_nocow) == (1000, 1001, False, True)
    assert (opts.journal_mode, opts.integrity_check) == ("wal", "full")


def test_flags_win_over_the_environment() -> None:
    env = {"AITBC_CHAINS": "a", "AITBC_DISABLE_COW": "false", "AITBC_UID": "5"}
    opts = cli.prepare_options(namespace(chains="b", nocow=True, uid=7, data_dir="/d"), env)
    assert (opts.chains, opts.nocow, opts.uid, str(opts.data_dir)) == (("b",), True, 7, "/d")


def test_defaults() -> None:
    opts = cli.prepare_options(namespace(), {"AITBC_CHAINS": "ait-mainnet"})
    assert (str(opts.data_dir), opts.uid, opts.nocow, opts.require_nocow) == ("/var/lib/aitbc", None, True, False)
    assert (opts.journal_mode, opts.integrity_check) == ("wal", "quick")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no chains"),
        ({"AITBC_CHAINS": "a", "AITBC_UID": "-1"}, "non-negative integer"),
        ({"AITBC_CHAINS": "a", "AITBC_REQUIRE_NOCOW": "si"}, "expected true or false"),
        ({"AITBC_CHAINS": "a", "AITBC_JOURNAL_MODE": "delete"}, "expected one of"),
        ({"AITBC_CHAINS": "a", "AITBC_DATA_DIR": "relative"}, "absolute"),
        ({"AITBC_CHAINS": "a,B"}, "DNS label"),
    ],
)
def test_invalid_inputs(env: dict[str, str], message: str) -> None:
    with pytest.raises(cli.UsageError, match=message):
        cli.prepare_options(namespace(), env)


MOUNTINFO = r"""22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /var/lib rw,relatime shared:9 - xfs /dev/vdb rw
31 30 0:40 / /var/lib/aitbc\040data rw,relatime shared:10 - btrfs /dev/loop0 rw,space_cache=v2
32 22 0:41 / /var/lib/aitbcx rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/var/lib/aitbc data/data/ait-mainnet", "btrfs"),
        ("/var/lib/aitbc data", "btrfs"),
        ("/var/lib/aitbc", "xfs"),
        ("/var/lib/aitbcx/data", "tmpfs"),
        ("/etc", "ext4"),
    ],
)
def test_mountinfo_longest_mount_point_wins(path: str, expected: str) -> None:
    assert fs.mountinfo_fstype(Path(path), MOUNTINFO) == expected


def test_filesystem_type_of_proc_comes_from_the_magic_table_or_mountinfo() -> None:
    assert fs.filesystem_type(Path("/proc")) == "proc"  # magic 0x9fa0 is not in the table: mountinfo answers
    assert fs.filesystem_type(Path("/dev/shm")) == "tmpfs"
