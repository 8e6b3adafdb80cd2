"""QEMU machines as data (boards/qemu/*.toml): where an emulation image goes and how SysTick ticks relate to
guest instructions under `-icount shift=0`."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass

from ..errors import TinycError
from ..resources import resource_dir

NS_PER_SECOND = 10**9


@dataclass(frozen=True)
class QemuMachine:
    name: str
    cpu: str
    cpu_clock_hz: int
    code_origin: int
    code_bytes: int
    ram_origin: int
    ram_bytes: int

    @property
    def instructions_per_tick(self) -> int:
        """Guest instructions per SysTick tick: with `-icount shift=0` each instruction is 1 ns of virtual time,
        and SysTick (CLKSOURCE = processor clock) ticks at the machine's CPU clock."""
        return NS_PER_SECOND // self.cpu_clock_hz


def load_machine(name: str) -> QemuMachine:
    path = resource_dir("boards") / "qemu" / f"{name}.toml"
    if "/" in name or not path.is_file():
        raise TinycError(f"no QEMU machine description '{name}' in boards/qemu/; the board's qemu_machine must "
                         "be one of mps2-an385, mps2-an386, mps2-an500, mps2-an505")
    with open(path, "rb") as fh:
        d = tomllib.load(fh)
    try:
        m = QemuMachine(d["machine"], d["cpu"], d["cpu_clock_hz"], d["code"]["origin"], d["code"]["size"],
                        d["ram"]["origin"], d["ram"]["size"])
    except KeyError as e:
        raise TinycError(f"{path}: field {e} is missing")
    if m.name != name or NS_PER_SECOND % m.cpu_clock_hz:
        raise TinycError(f"{path}: machine must be '{name}' and cpu_clock_hz must divide 10^9")
    return m
