"""A classic BPF program for the daemon's uevent socket: the kernel drops
the uevents of other subsystems before they wake the reader.

A NIC's hotplug sends a dozen uevents that are not PCI (its virtio child,
the net device and its queues, a wakeup source, the vfio nodes), and each
woke the reader thread, which took the GIL from the thread binding the
device only to drop it in parse().

The kernel's format (lib/kobject_uevent.c) fixes where SUBSYSTEM is: the
datagram is "ACTION@DEVPATH\\0" (H bytes with its NUL), then "ACTION=..\\0",
"DEVPATH=..\\0", "SUBSYSTEM=..\\0" in that order, so SUBSYSTEM= starts at
2H + 15.  Classic BPF has no loops, so the program looks for the first NUL
at each offset in turn, up to HEADER_MAX.

It drops a datagram only when it reads it as another subsystem's in that
format, or when a load runs past its end (classic BPF's rule), which needs
a datagram with no NUL in it or cut short within SUBSYSTEM=, and which
parse() would drop as well.  Anything else passes (a header longer than
HEADER_MAX, a field other than SUBSYSTEM= at that place) and parse()
decides, as without the filter.
"""

from __future__ import annotations

import struct

# BPF_MAXINSNS is 4096; four instructions an offset, a few for the rest.
HEADER_MAX = 1000

_LD_B_ABS, _LD_W_IND, _LD_H_IND = 0x30, 0x40, 0x48
_LDX_IMM, _JEQ_K, _JA, _RET_K = 0x01, 0x15, 0x05, 0x06
PASS, DROP = 0xFFFFFFFF, 0


def _op(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _word(text: bytes) -> int:
    return int.from_bytes(text, "big")      # BPF loads are in network order


def program(subsystem: bytes = b"pci", header_max: int = HEADER_MAX) -> bytes:
    """The instructions (struct sock_filter[]) passing `subsystem`'s uevents."""
    want = subsystem + b"\0"
    if len(want) > 4:
        raise ValueError("a subsystem of at most three letters: one word is compared")
    want = want.ljust(4, b"\0")     # "pci\0": the name and its NUL
    scan = []
    n_scan = 4 * header_max + 1
    for h in range(1, header_max + 1):
        here = len(scan)
        scan += [
            _op(_LD_B_ABS, 0, 0, h - 1),
            _op(_JEQ_K, 0, 2, 0),                   # the first NUL: header is h bytes
            _op(_LDX_IMM, 0, 0, 2 * h + 15),        # where SUBSYSTEM= must start
            _op(_JA, 0, 0, n_scan - (here + 4)),    # to the check
        ]
    scan.append(_op(_RET_K, 0, 0, PASS))            # no NUL that early: parse() decides
    # The check, X at SUBSYSTEM=; a field other than it there: pass.
    check = [
        _op(_LD_W_IND, 0, 0, 0), _op(_JEQ_K, 0, 7, _word(b"SUBS")),
        _op(_LD_W_IND, 0, 0, 4), _op(_JEQ_K, 0, 5, _word(b"YSTE")),
        _op(_LD_H_IND, 0, 0, 8), _op(_JEQ_K, 0, 3, _word(b"M=")),
        _op(_LD_W_IND, 0, 0, 10), _op(_JEQ_K, 1, 0, _word(want)),
        _op(_RET_K, 0, 0, DROP),
        _op(_RET_K, 0, 0, PASS),
    ]
    return b"".join(scan + check)


SO_ATTACH_FILTER = 26


def attach(sock, subsystem: bytes = b"pci") -> None:
    """Attach program() to `sock` (any socket: the kernel copies it).
    Raises OSError when the kernel refuses it."""
    import ctypes
    code = program(subsystem)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
    sock.setsockopt(1, SO_ATTACH_FILTER, fprog)     # SOL_SOCKET
