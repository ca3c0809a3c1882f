"""The argparse-free parser: whatever it parses, argparse parses the same;
whatever it does not, argparse gets (help, errors, abbreviations)."""

import pytest

from vfio_flavourd import cli, commands, fastargs

# Command lines people and scripts type; the fast parser must take each.
PLAIN = [
    ["plan"],
    ["--root", "/x", "plan", "--json"],
    ["--root=/x", "--kernel-release", "6.12", "plan"],
    ["--policy", "a.yaml", "--policy=b.yaml", "--simulate", "plan"],
    ["apply"],
    ["apply", "0000:01:00.0"],
    ["apply", "0000:01:00.0", "3b:00.2", "--dry-run"],
    ["apply", "-n", "--force", "0000:01:00.0"],
    ["apply", "--json", "0000:01:00.0", "0000:01:00.1", "--force"],
    ["release", "0000:01:00.0"],
    ["release", "--dry-run", "0000:01:00.0", "0000:01:00.1"],
    ["status"],
    ["status", "--json"],
    ["explain", "3b:00.2", "--json"],
    ["daemon", "--dry-run", "--source", "kernel"],
    ["daemon", "--source=udev", "-v"],
    ["variants", "--json"],
    ["check-config"],
    ["check-config", "a.yaml", "b.yaml"],
    ["migrate", "--write"],
    ["--root", "plan", "status"],           # a root directory named like a command
]

# Left to argparse: help, version, errors, abbreviations, separators.
OTHER = [
    [],
    ["--help"],
    ["plan", "-h"],
    ["--version"],
    ["plan", "--jso"],
    ["--ro", "/x", "plan"],
    ["release"],
    ["explain"],
    ["explain", "a", "b"],
    ["status", "extra"],
    ["daemon", "--source", "netlink"],
    ["daemon", "--source"],
    ["apply", "a", "--force", "b"],
    ["apply", "--", "a"],
    ["plan", "--json=yes"],
    ["nosuchcommand"],
    ["plan", "--root", "/x"],
]


def fast(argv):
    command = cli.command_in(argv)
    if command is None:
        return None
    rec = fastargs.Recorder()
    commands.load(command).add_arguments(rec)
    if not rec.supported:
        return None
    glob = [fastargs.Spec(flags, kw) for flags, kw in cli.GLOBAL_OPTIONS]
    return fastargs.parse(glob, command, rec.specs, argv)


def slow(argv):
    ns = cli.build_parser().parse_args(argv)
    values = vars(ns)
    values.pop("_module")
    return values


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_plain_lines_parse_as_argparse_does(argv):
    got = fast(argv)
    assert got is not None, "left to argparse"
    assert got == slow(argv)


@pytest.mark.parametrize("argv", OTHER, ids=lambda a: " ".join(a) or "(nothing)")
def test_other_lines_are_left_to_argparse(argv):
    assert fast(argv) is None


# `publish` takes optional values (nargs="?"), which argparse parses; it
# is not a command people time at the shell.
ARGPARSE_ONLY = {"publish"}


def test_every_command_module_is_understood():
    for name in commands.COMMANDS:
        rec = fastargs.Recorder()
        commands.load(name).add_arguments(rec)
        assert rec.supported == (name not in ARGPARSE_ONLY), name


def test_a_typed_option_is_converted_and_a_bad_value_left_to_argparse():
    from vfio_flavourd import cli
    args = cli.parse_args(["apply", "--unbind-timeout", "2.5", "0000:01:00.0"])
    assert args.unbind_timeout == 2.5 and args.addresses == ["0000:01:00.0"]
    with pytest.raises(SystemExit):      # argparse's own error for the bad value
        cli.parse_args(["apply", "--unbind-timeout", "soon", "0000:01:00.0"])


def test_an_argument_it_does_not_model_sends_the_command_to_argparse():
    rec = fastargs.Recorder()
    rec.add_argument("--count", action="count")
    assert not rec.supported
    rec = fastargs.Recorder()
    rec.add_argument("--path", nargs="?", const=True)
    assert not rec.supported
    rec = fastargs.Recorder()
    rec.add_mutually_exclusive_group().add_argument("--a", action="store_true")
    assert not rec.supported


def test_main_takes_the_fast_path_and_imports_no_argparse(monkeypatch, capsys, tmp_path):
    import builtins
    real_import = builtins.__import__

    def guarded(name, *a, **k):
        assert name != "argparse", "argparse imported for a plain command line"
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", guarded)
    args = cli.parse_args(["--root", str(tmp_path), "status", "--json"])
    assert (args.command, args.json, args.root) == ("status", True, str(tmp_path))
    assert args._module is commands.load("status")
